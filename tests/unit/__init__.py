"""Unit tests of the lead's modules: wire, crypto, transport, state, membership, datadir,
events and api."""
