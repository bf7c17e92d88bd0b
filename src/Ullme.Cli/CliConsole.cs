using Spectre.Console;
using Ullme.MLNet;
using Ullme.MLNet.Hub;
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

    /// <summary>Loads a model with a status line (a Hugging Face id not yet cached is downloaded first, with a
    /// progress bar).</summary>
    public static UllmeModel LoadModel(string model, ModelLoadOptions options)
    {
        if (DownloadIfHubId(model, options.Hub) is not null) options = options with { Hub = (options.Hub ?? HubOptions.FromEnvironment()) with { Offline = true } };
        if (!Err.Profile.Capabilities.Interactive) return UllmeModel.Load(model, options);
        UllmeModel loaded = null!;
        Err.Status().Start($"Loading {Markup.Escape(model)}…", _ => loaded = UllmeModel.Load(model, options));
        return loaded;
    }

    /// <summary>
    /// For a Hugging Face id (<c>org/name[@revision]</c>) that names no local folder: its snapshot folder in the Hub
    /// cache, downloading what is missing first, with a progress bar on stderr when it is a terminal (a note
    /// otherwise); null for a folder, a file or "default".
    /// </summary>
    public static string? DownloadIfHubId(string model, HubOptions? hub = null)
    {
        if (Directory.Exists(model) || File.Exists(model) || !HubModelId.TryParse(model, out _)) return null;
        hub ??= HubOptions.FromEnvironment();
        try
        {
            // Already cached: no request, no progress display.
            if (UllmeModel.ResolveHubId(model, hub with { Offline = true }, null) is { } cached) return cached.Folder;
            return null;
        }
        catch (UllmeException) when (!hub.Offline)
        {
            // not cached (or partly): download below
        }
        bool noted = false;
        void NoteOnce(ModelDownloadProgress p)
        {
            if (noted) return;
            noted = true;
            Note($"Downloading {p.FileCount} file(s), {Size(p.BytesTotal)}, of {p.ModelId} from {hub.Endpoint} into {hub.CacheFolder}");
        }
        if (!Err.Profile.Capabilities.Interactive)
            return UllmeModel.ResolveHubId(model, hub, new SyncProgress<ModelDownloadProgress>(NoteOnce), CliRunner.InterruptToken)?.Folder;
        string? folder = null;
        Err.Progress()
            .AutoClear(false)
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new DownloadedColumn(), new TransferSpeedColumn(), new RemainingTimeColumn())
            .Start(ctx =>
            {
                ProgressTask? task = null;
                folder = UllmeModel.ResolveHubId(model, hub, new SyncProgress<ModelDownloadProgress>(p =>
                {
                    NoteOnce(p);
                    task ??= ctx.AddTask(Markup.Escape($"Downloading {p.ModelId}"), maxValue: Math.Max(1, p.BytesTotal));
                    task.MaxValue = Math.Max(1, p.BytesTotal);
                    task.Description = Markup.Escape($"{p.ModelId}: {p.File} ({p.FileIndex}/{p.FileCount})");
                    task.Value = p.BytesDone;
                }), CliRunner.InterruptToken)?.Folder;
                if (task is not null) task.Value = task.MaxValue;
            });
        return folder;
    }

    private static string Size(long bytes) => bytes >= 1L << 30 ? $"{bytes / (double)(1L << 30):F1} GiB" : bytes >= 1L << 20 ? $"{bytes / (double)(1L << 20):F1} MiB" : $"{bytes / 1024.0:F1} KiB";
}

/// <summary>An IProgress that reports on the calling thread (System.Progress posts to the thread pool).</summary>
internal sealed class SyncProgress<T>(Action<T> report) : IProgress<T>
{
    public void Report(T value) => report(value);
}
