"""One module per `llmft` subcommand (or group of subcommands).

Each module defines `register(subparsers)`, which adds its parser and sets
`func` to a callable taking the parsed arguments. Modules are discovered
automatically, so adding a subcommand means adding a file here. Keep imports of
heavy libraries (torch, transformers, boto3) inside the command functions so
`llmft --help` and the light subcommands start fast.
"""
