using Microsoft.Extensions.Logging;

namespace Ullme.Cli.Training;

/// <summary>An <see cref="ILogger"/> for library calls made by a command: warnings and errors become
/// <c>warning:</c> lines on stderr, everything below is dropped.</summary>
internal sealed class WarningLogger : ILogger
{
    public static WarningLogger Instance { get; } = new();

    public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

    public bool IsEnabled(LogLevel logLevel) => logLevel >= LogLevel.Warning;

    public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
    {
        if (IsEnabled(logLevel)) CliConsole.Warn(formatter(state, exception));
    }
}
