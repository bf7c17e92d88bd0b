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
        // Help is not hard-wrapped at 80 columns when piped (System.CommandLine's default), nor wider than the terminal.
        foreach (var option in root.Options)
            if (option is System.CommandLine.Help.HelpOption { Action: System.CommandLine.Help.HelpAction help }) help.MaxWidth = CliConsole.HelpWidth();
        return root;
    }

    /// <summary>Runs one command line; returns the exit code (0 success, 1 user error, 2 usage error).</summary>
    public static int Run(string[] args) => CliRunner.Run(CreateRoot(), args);
}
