"""Pure compute for OpScope: operators, parameter specs, result layers. Never imports Qt."""
