"""Tests: unit tests of services and end-to-end tests over real HTTP and SMTP."""
