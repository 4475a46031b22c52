"""What every part shares and none owns: simulated-time units, the trace's "none", errors."""
