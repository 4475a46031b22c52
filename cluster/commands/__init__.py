"""The commands: `wafersim run|summary|list|calibrate|validate`, and running a scenario from end to end."""
