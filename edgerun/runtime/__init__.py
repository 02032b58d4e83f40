"""The numpy runtime: model readers, the graph IR, passes, kernels and the execution plan."""
