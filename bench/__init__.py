"""Side-by-side benchmarks of our server against named peers; ``bench.harness`` holds the shared machinery."""
