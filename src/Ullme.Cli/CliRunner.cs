using System.CommandLine;
using Ullme.MLNet;

namespace Ullme.Cli;

/// <summary>
/// Runs the parsed command line. A user-facing failure (<see cref="UllmeException"/>, a missing file, bad input)
/// becomes one line on stderr and exit code 1; never a stack trace. Commands write outputs through
/// <see cref="AtomicFile"/> so a failure leaves no half-written file. SIGINT/SIGTERM cancel the command's token
/// (<see cref="CliInterrupt"/>): the command stops at its next safe point and the process exits with 130 / 143.
/// </summary>
internal static class CliRunner
{
    private static readonly AsyncLocal<string[]?> CurrentArgs = new();

    /// <summary>The arguments of the command line being run (for messages that repeat it, e.g. the resume command).</summary>
    public static IReadOnlyList<string> Args => CurrentArgs.Value ?? [];

    /// <summary>Cancelled by the first SIGINT/SIGTERM of the running command (what code far from the command's
    /// action observes, e.g. a model download inside <see cref="CliConsole.LoadModel"/>); none outside a command.</summary>
    public static CancellationToken InterruptToken => CurrentInterrupt.Value;

    private static readonly AsyncLocal<CancellationToken> CurrentInterrupt = new();

    public static int Run(RootCommand root, string[] args)
    {
        using var interrupt = new CliInterrupt();
        CurrentArgs.Value = args;
        CurrentInterrupt.Value = interrupt.Token;
        ParseResult? parsed = null;
        try
        {
            // Our own signal handling (ProcessTerminationTimeout = null): System.CommandLine's would give up on the
            // command after a timeout, while a training step may take minutes to reach its checkpoint.
            var configuration = new InvocationConfiguration { EnableDefaultExceptionHandler = false, ProcessTerminationTimeout = null };
            parsed = root.Parse(args);
            return parsed.InvokeAsync(configuration, interrupt.Token).GetAwaiter().GetResult();
        }
        catch (Exception e) when (interrupt.Signal is not null && (Unwrap(e) is OperationCanceledException or CommandInterruptedException || IsUserError(e)))
        {
            var inner = CliOptionNames.ForCommand(Unwrap(e), parsed?.CommandResult.Command);
            Console.Error.WriteLine(inner is OperationCanceledException
                ? $"interrupted by {interrupt.SignalName}: stopped; no output was written."
                : $"interrupted by {interrupt.SignalName}: {inner.Message}");
            return interrupt.ExitCode;
        }
        catch (Exception e) when (IsUserError(e))
        {
            Console.Error.WriteLine($"error: {CliOptionNames.ForCommand(Unwrap(e), parsed?.CommandResult.Command).Message}");
            return 1;
        }
        finally
        {
            CurrentArgs.Value = null;
            CurrentInterrupt.Value = default;
        }
    }

    internal static bool IsUserError(Exception e) => Unwrap(e) is UllmeException or FileNotFoundException
        or DirectoryNotFoundException or UnauthorizedAccessException or OperationCanceledException or IOException
        or CommandInterruptedException;

    internal static Exception Unwrap(Exception e)
    {
        while (e is AggregateException or System.Reflection.TargetInvocationException && e.InnerException is not null) e = e.InnerException!;
        return e;
    }
}
