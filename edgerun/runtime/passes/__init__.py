"""Graph passes: each takes a graph and returns what it derived or a new graph."""
