"""Graph -> Graph steps pack applies before quantization: simplification (with BatchNorm
folding) now; pruning, low-rank factorisation and weight clustering join here."""
