"""Root conftest: enables pytester (allowed only here) for the plugin's own tests."""

pytest_plugins = ["pytester"]
