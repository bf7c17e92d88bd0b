using System.CommandLine;
using System.Globalization;
using Spectre.Console;
using Ullme.MLNet;
using Ullme.MLNet.Evaluation;
using Ullme.MLNet.Evaluation.Results;
using Ullme.MLNet.Inference;

namespace Ullme.Cli.Commands;

/// <summary>
/// <c>ullme eval</c>: MTEB-style evaluation. Reads and checks every task's files, loads the model, runs the tasks
/// with one progress bar each, writes MTEB result files under --output and prints the summary table.
/// </summary>
internal static class EvalCommand
{
    public static Command Create()
    {
        var model = CommonOptions.Model();
        var tasks = new Option<string[]>("--tasks")
        {
            Description = $"Comma-separated tasks: built-in ({string.Join(", ", BuiltInTasks.Names)}) or type:path " +
                          "(sts|classification|clustering|pairclassification|retrieval|reranking)",
            Required = true,
            AllowMultipleArgumentsPerToken = true,
        };
        var dataDir = new Option<string>("--data-dir") { Description = "Folder holding the task data (stsbenchmark/, sick/, scifact/, ...)", Required = true };
        var output = new Option<string>("--output") { Description = "Results root; files go to <output>/<org>__<model>/<revision>/<Task>.json", DefaultValueFactory = _ => "results" };
        var limit = new Option<int?>("--limit") { Description = "Smoke run: at most N items per split" };
        var batchSize = new Option<int>("--batch-size") { Description = "Texts per forward pass", DefaultValueFactory = _ => 32 };
        var pooling = new Option<string?>("--pooling") { Description = "mean | weighted-mean | last-token | first-token (default: the model's)" };
        var attention = new Option<string?>("--attention") { Description = "causal | bidirectional (default: the model's)" };
        var maxLength = new Option<int?>("--max-length") { Description = "Maximum tokens per text (default: the model's; 256 for all-MiniLM-L6-v2)" };
        var dtype = CommonOptions.DType();
        var device = CommonOptions.Device();
        var backend = CommonOptions.Backend();
        var dimensions = CommonOptions.NullableInt("--dimensions", "Evaluate the first N dimensions of each embedding (Matryoshka truncation), renormalised (default: all).");
        var threads = CommonOptions.Threads();
        var instructions = new Option<string>("--instructions") { Description = "auto (decoders only) | on | off", DefaultValueFactory = _ => "auto" };
        var instruction = new Option<string[]>("--instruction") { Description = "Override a task's instruction: Task=text (repeatable)" };
        var template = new Option<string>("--instruction-template") { Description = "Instruction format with {0}", DefaultValueFactory = _ => InstructionOptions.DefaultTemplate };
        var revision = new Option<string>("--revision") { Description = "Model revision for the results folder", DefaultValueFactory = _ => "no_revision_available" };
        var modelName = new Option<string?>("--model-name") { Description = "Model name for the results folder (default: the model's id)" };

        var command = new Command("eval", "Evaluate an embedding model on MTEB-style tasks and write MTEB result files.")
        {
            model, tasks, dataDir, output, limit, batchSize, pooling, attention, maxLength, dtype, device, backend, threads, dimensions, instructions,
            instruction, template, revision, modelName,
        };
        command.SetAction((parse, cancellationToken) =>
        {
            var taskList = (parse.GetValue(tasks) ?? []).SelectMany(t => t.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)).ToArray();
            if (parse.GetValue(batchSize) <= 0) throw new UllmeException($"--batch-size must be positive, got {parse.GetValue(batchSize)}");
            if (parse.GetValue(maxLength) is <= 0) throw new UllmeException($"--max-length must be positive, got {parse.GetValue(maxLength)}");
            CommonOptions.ApplyThreads(parse.GetValue(threads));
            var options = new EvaluationOptions
            {
                Model = parse.GetValue(model)!,
                Tasks = taskList,
                DataDir = parse.GetValue(dataDir)!,
                OutputDir = parse.GetValue(output),
                Limit = parse.GetValue(limit),
                BatchSize = parse.GetValue(batchSize),
                Pooling = CommonOptions.Pooling(parse.GetValue(pooling)),
                Attention = CommonOptions.Attention(parse.GetValue(attention)),
                MaxLength = parse.GetValue(maxLength),
                Dimensions = parse.GetValue(dimensions),
                LoadOptions = CommonOptions.LoadOptions(parse.GetValue(dtype)!, parse.GetValue(device)!, null, parse.GetValue(backend)),
                Instructions = new InstructionOptions
                {
                    Mode = ParseMode(parse.GetValue(instructions)!),
                    Template = parse.GetValue(template)!,
                    Overrides = ParseOverrides(parse.GetValue(instruction) ?? []),
                },
                Revision = parse.GetValue(revision)!,
                ModelName = parse.GetValue(modelName),
            };
            return Task.FromResult(Run(options, cancellationToken));
        });
        return command;
    }

    private static int Run(EvaluationOptions options, CancellationToken cancellationToken)
    {
        var err = CliConsole.Err;
        // Read and check every task's files before the (slow) model load.
        var tasks = BuiltInTasks.Create(options.Tasks, options.DataDir);
        if (options.OutputDir is string outputDir) AtomicFile.RemoveStaleTemporaries(outputDir, recursive: true);   // left by a killed run
        using var model = CliConsole.LoadModel(options.Model, options.LoadOptions ?? new ModelLoadOptions());

        EvaluationReport? report = null;
        if (!err.Profile.Capabilities.Interactive)
        {
            // Redirected output: one line per finished task instead of redrawn bars.
            report = UllmeEvaluation.Run(model, tasks, options, new SyncProgress<EvaluationProgress>(p =>
            {
                if (p.Stage == "done") err.MarkupLine($"[grey]{p.TaskIndex + 1}/{p.TaskCount}[/] {Markup.Escape(p.Task)} done");
            }), cancellationToken);
            Finish(err, report);
            return 0;
        }
        err.Progress()
            .AutoClear(false)
            .Columns(new TaskDescriptionColumn { Alignment = Justify.Left }, new ProgressBarColumn(), new PercentageColumn(),
                new ElapsedTimeColumn(), new RemainingTimeColumn(), new SpinnerColumn())
            .Start(ctx =>
            {
                var bars = tasks.Select(t => ctx.AddTask(Markup.Escape(t.Name), autoStart: false, maxValue: 1)).ToArray();
                var progress = new SyncProgress<EvaluationProgress>(p =>
                {
                    var bar = bars[p.TaskIndex];
                    if (!bar.IsStarted) bar.StartTask();
                    if (p.Stage == "done")
                    {
                        bar.Description = Markup.Escape(p.Task);
                        bar.Value = bar.MaxValue;
                        bar.StopTask();
                        return;
                    }
                    bar.Description = Markup.Escape($"{p.Task}: {p.Stage}");
                    if (p.Total > 0 && Math.Abs(bar.MaxValue - p.Total) > 0.5) bar.MaxValue = p.Total;
                    bar.Value = Math.Min(p.Done, bar.MaxValue);
                });
                report = UllmeEvaluation.Run(model, tasks, options, progress, cancellationToken);
            });

        Finish(err, report!);
        return 0;
    }

    private static void Finish(IAnsiConsole err, EvaluationReport report)
    {
        PrintSummary(report);
        // Degenerate splits (fewer rows than labels or folds, e.g. after --limit): said on stderr, also in the files.
        foreach (var r in report.Results)
            foreach (var (split, entries) in r.Scores)
                foreach (var w in entries.SelectMany(s => s.Warnings))
                    CliConsole.Warn($"{r.TaskName} {split}: {w}");
        foreach (var file in report.Files) err.MarkupLine($"[grey]wrote[/] {Markup.Escape(file)}");
        err.MarkupLine($"[grey]embedding cache: {report.CacheMisses} texts embedded, {report.CacheHits} reused[/]");
    }

    private static void PrintSummary(EvaluationReport report)
    {
        var table = new Table().Title(Markup.Escape(report.ModelName));
        table.AddColumn("Task").AddColumn("Type").AddColumn("Split").AddColumn("Metric").AddColumn(new TableColumn("Score").RightAligned());
        foreach (var r in report.Summary.Rows)
            table.AddRow(Markup.Escape(r.Task), r.Type?.ToString() ?? "", Markup.Escape(r.Split + (r.Primary ? "" : " *")),
                Markup.Escape(r.MainScore), EvaluationSummary.Percent(r.Score));
        table.AddRow("[bold]Average[/]", "", "", "", $"[bold]{EvaluationSummary.Percent(report.Summary.Average)}[/]");
        AnsiConsole.Write(table);
        if (report.Summary.Rows.Any(r => !r.Primary))
            AnsiConsole.MarkupLine("[grey]* not in the average (each task counts once: test, else validation/dev, else train)[/]");
    }

    internal static InstructionMode ParseMode(string value) => value.Trim().ToLowerInvariant() switch
    {
        "auto" => InstructionMode.Auto,
        "on" or "true" => InstructionMode.On,
        "off" or "false" => InstructionMode.Off,
        _ => throw new UllmeException($"--instructions '{value}' is not one of auto, on, off"),
    };

    internal static Dictionary<string, string> ParseOverrides(IEnumerable<string> values)
    {
        var result = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase);
        foreach (var v in values)
        {
            int eq = v.IndexOf('=');
            if (eq <= 0) throw new UllmeException($"--instruction '{v}' must look like Task=instruction text");
            result[v[..eq].Trim()] = v[(eq + 1)..];
        }
        return result;
    }
}
