using Spectre.Console;
using Ullme.MLNet.Inference;

namespace Ullme.Cli;

/// <summary>
/// Human-facing output: progress bars and notes go to stderr (stdout stays clean for piping); results go to files.
/// </summary>
internal static class CliConsole
{
    private static readonly Lock ErrGate = new();
    private static IAnsiConsole? _err;
    private static TextWriter? _errWriter;

    /// <summary>The console over the current <see cref="Console.Error"/> (a host or test that redirects stderr gets
    /// our notes and warnings too).</summary>
    public static IAnsiConsole Err
    {
        get
        {
            lock (ErrGate)
            {
                var writer = Console.Error;
                if (_err is null || !ReferenceEquals(writer, _errWriter))
                {
                    _err = CreateErr(writer);
                    _errWriter = writer;
                }
                return _err;
            }
        }
    }

    /// <summary>Width of text written to a file or a pipe: no wrapping (a path or a message stays on one line).</summary>
    internal const int UnwrappedWidth = 1 << 20;

    private static IAnsiConsole CreateErr(TextWriter writer)
    {
        var console = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(writer) });
        // Spectre wraps at 80 columns when stderr is not a terminal; a pipe or a log file must get whole lines.
        if (Console.IsErrorRedirected || !console.Profile.Out.IsTerminal) console.Profile.Width = UnwrappedWidth;
        return console;
    }

    /// <summary>The width help text is wrapped at: none when stdout is not a terminal, else the terminal's width
    /// (<c>COLUMNS</c> when set, as the shell exports it).</summary>
    internal static int HelpWidth()
    {
        if (Console.IsOutputRedirected) return UnwrappedWidth;
        if (int.TryParse(Environment.GetEnvironmentVariable("COLUMNS"), out int columns) && columns > 0) return columns;
        try
        {
            return Console.WindowWidth > 0 ? Console.WindowWidth : UnwrappedWidth;
        }
        catch (IOException)
        {
            return UnwrappedWidth;
        }
    }

    public static void Note(string message) => Err.MarkupLine($"[grey]{Markup.Escape(message)}[/]");

    public static void Warn(string message) => Err.MarkupLine($"[yellow]warning:[/] {Markup.Escape(message)}");

    /// <summary>Test hook: every progress report a command makes (what its progress bar shows).</summary>
    internal static Action<EngineProgress>? ProgressObserved { get; set; }

    /// <summary>Runs <paramref name="work"/> with a progress bar (count of items, ETA) fed by the engine's progress.</summary>
    public static T WithProgress<T>(string description, int total, Func<IProgress<EngineProgress>, T> work)
    {
        if (total == 0 || !Err.Profile.Capabilities.Interactive)
            return work(new SyncProgress<EngineProgress>(p => ProgressObserved?.Invoke(p)));
        T result = default!;
        Err.Progress()
            .AutoClear(false)
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new RemainingTimeColumn(), new SpinnerColumn())
            .Start(ctx =>
            {
                var task = ctx.AddTask(Markup.Escape(description), maxValue: total);
                result = work(new SyncProgress<EngineProgress>(p =>
                {
                    task.Value = p.Done;
                    ProgressObserved?.Invoke(p);
                }));
                task.Value = total;
            });
        return result;
    }

    /// <summary>Loads a model with a status line.</summary>
    public static UllmeModel LoadModel(string model, ModelLoadOptions options)
    {
        if (!Err.Profile.Capabilities.Interactive) return UllmeModel.Load(model, options);
        UllmeModel loaded = null!;
        Err.Status().Start($"Loading {Markup.Escape(model)}…", _ => loaded = UllmeModel.Load(model, options));
        return loaded;
    }
}

/// <summary>An IProgress that reports on the calling thread (System.Progress posts to the thread pool).</summary>
internal sealed class SyncProgress<T>(Action<T> report) : IProgress<T>
{
    public void Report(T value) => report(value);
}
