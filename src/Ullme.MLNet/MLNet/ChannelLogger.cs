using Microsoft.Extensions.Logging;
using Microsoft.ML.Runtime;

namespace Ullme.MLNet.Transforms;

/// <summary>
/// An <see cref="ILogger"/> that writes into ML.NET's channels, so the engine's own messages (e.g. "N texts were
/// truncated") reach <c>mlContext.Log</c> like every other ML.NET component's.
/// </summary>
internal sealed class ChannelLogger(IChannelProvider host, string channelName) : ILogger
{
    public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

    public bool IsEnabled(LogLevel logLevel) => logLevel != LogLevel.None;

    public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
    {
        if (logLevel == LogLevel.None) return;
        string message = formatter(state, exception);
        if (exception is not null) message += " " + exception.Message;
        if (string.IsNullOrEmpty(message)) return;
        using var ch = host.Start(channelName);
        switch (logLevel)
        {
            case LogLevel.Trace or LogLevel.Debug: ch.Trace(MessageSensitivity.None, message); break;
            case LogLevel.Information: ch.Info(MessageSensitivity.None, message); break;
            case LogLevel.Warning: ch.Warning(MessageSensitivity.None, message); break;
            default: ch.Error(MessageSensitivity.None, message); break;
        }
    }
}
