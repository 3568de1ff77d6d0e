"""Benchmarks driven by recipes: ``pytest benchmarks/ --ubench-recipe=llm-inference``.

Each recipe and each point of its sweep is one case (``test_recipe[redis-concurrency=4]``, whatever the
protocol); a case fails when an SLO does, or when it regressed against a baseline.
"""


def test_recipe(ubench_case, ubench):
    ubench.run(ubench_case)
