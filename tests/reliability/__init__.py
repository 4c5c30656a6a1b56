"""The fault suite: real crawls against a misbehaving reference server, counted result by result."""
