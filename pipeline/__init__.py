"""The mlmprep Beam job: options, graph assembly, manifest and command line."""
