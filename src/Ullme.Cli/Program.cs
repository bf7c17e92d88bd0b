using System.CommandLine;
using Ullme.Cli;
using Ullme.Cli.Commands;

var root = new RootCommand("ullme: turn LLMs into text-embedding models; embed, score, tokenize, train and evaluate.");
foreach (var command in CommandRegistry.All()) root.Subcommands.Add(command);
return CliRunner.Run(root, args);
