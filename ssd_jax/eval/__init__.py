"""Code evaluation: a process sandbox, LiveCodeBench and HumanEval runners, pass@k."""
