using System.CommandLine;
using Ullme.Cli.Commands;

namespace Ullme.Cli;

/// <summary>The `ullme` command line, callable in-process (tests, hosting apps) as well as from Program.</summary>
public static class UllmeCli
{
    public static RootCommand CreateRoot()
    {
        var root = new RootCommand("ullme: turn LLMs into text-embedding models; embed, score, tokenize, train and evaluate.");
        foreach (var command in CommandRegistry.All()) root.Subcommands.Add(command);
        return root;
    }

    /// <summary>Runs one command line; returns the exit code (0 success, 1 user error, 2 usage error).</summary>
    public static int Run(string[] args) => CliRunner.Run(CreateRoot(), args);
}
