using System.CommandLine;
using Ullme.MLNet;

namespace Ullme.Cli;

/// <summary>
/// Runs the parsed command line. A user-facing failure (<see cref="UllmeException"/>, a missing file, bad input)
/// becomes one line on stderr and exit code 1; never a stack trace. Commands write outputs through
/// <see cref="AtomicFile"/> so a failure leaves no half-written file.
/// </summary>
internal static class CliRunner
{
    public static int Run(RootCommand root, string[] args)
    {
        try
        {
            return root.Parse(args).Invoke(new InvocationConfiguration { EnableDefaultExceptionHandler = false });
        }
        catch (Exception e) when (IsUserError(e))
        {
            Console.Error.WriteLine($"error: {Unwrap(e).Message}");
            return 1;
        }
    }

    internal static bool IsUserError(Exception e) => Unwrap(e) is UllmeException or FileNotFoundException
        or DirectoryNotFoundException or UnauthorizedAccessException or OperationCanceledException or IOException;

    internal static Exception Unwrap(Exception e)
    {
        while (e is AggregateException or System.Reflection.TargetInvocationException && e.InnerException is not null) e = e.InnerException!;
        return e;
    }
}
