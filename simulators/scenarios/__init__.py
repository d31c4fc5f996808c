"""Scenario files shipped with the package (package data); see docs/simulators.md."""
