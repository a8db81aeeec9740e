"""Analysis: the paper's toy fork/lock model, SSD loss and entropy decompositions, Fig. 6 diagnostics, the report."""
