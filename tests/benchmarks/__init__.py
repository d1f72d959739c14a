"""Tests of the benchmark scripts' cheap paths (skips and report rendering)."""
