"""Benchmarks driven by recipes: ``pytest benchmarks/ --ubench-recipe=llm-inference``.

Each recipe and each point of its sweep is one case; a case fails when an SLO does.
"""


def test_llm(ubench_case, ubench):
    ubench.run(ubench_case)
