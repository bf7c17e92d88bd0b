using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using Spectre.Console;
using Ullme.MLNet;
using Ullme.MLNet.Orleans.Client;
using Ullme.MLNet.Orleans.Jobs;

namespace Ullme.Cli.Commands;

/// <summary><c>ullme job submit|status|wait|cancel</c>: corpus embedding jobs on an Orleans cluster of <c>ullme silo</c>s.</summary>
internal static class JobCommand
{
    public static Command Create()
    {
        var command = new Command("job", "Corpus embedding jobs on a cluster of `ullme silo`s: submit, status, wait, cancel, retry, list.");
        command.Subcommands.Add(Submit());
        command.Subcommands.Add(IdCommand("status", "Show a job's progress: rows done/total, rows/s, ETA, failed items.", Status));
        command.Subcommands.Add(IdCommand("wait", "Wait for a job to finish, with a progress bar; exit 0 when it completed, 1 when it failed or was canceled.", Wait));
        command.Subcommands.Add(IdCommand("cancel", "Cancel a job (phase canceled): no more items are leased; committed shards stay.", Cancel));
        command.Subcommands.Add(IdCommand("retry", "Run a failed or canceled job again: its unfinished items get fresh attempts; committed shards stay.", RetryJob));
        command.Subcommands.Add(List());
        return command;
    }

    private static Command Submit()
    {
        var cluster = ClusterOptions.Cluster();
        var stateDir = ClusterOptions.StateDirectory();
        var clusterId = ClusterOptions.ClusterId();
        var input = new Option<string[]>("--input", "-i")
        {
            Description = "Input files or globs (*, ?, ** for any depth): .txt, .jsonl, .csv, .tsv, .parquet. Repeat or give several.",
            Required = true,
            AllowMultipleArgumentsPerToken = true,
        };
        var output = new Option<string>("--output", "-o") { Description = "A new or empty folder for the Parquet shards and manifest.json (every silo must reach it).", Required = true };
        var textColumn = new Option<string>("--text-column") { Description = "Field/column holding the text (.jsonl, .csv, .tsv, .parquet).", DefaultValueFactory = _ => "text" };
        var idColumn = new Option<string?>("--id-column") { Description = "Field/column holding each row's id (default: <file>:<row number>)." };
        var shardRows = CommonOptions.Int("--shard-rows", "Rows per work item and output shard.", 1000);
        var pooling = new Option<string?>("--pooling") { Description = "mean | weighted-mean | last-token | first-token (default: the model's)." };
        var attention = new Option<string?>("--attention") { Description = "bidirectional | causal (default: bidirectional)." };
        var instruction = new Option<string?>("--instruction") { Description = "Text put before every input; attended to, excluded from pooling." };
        var maxLength = CommonOptions.NullableInt("--max-length", "Maximum tokens per text (default: the model's).");
        var batchSize = CommonOptions.Int("--batch-size", "Texts per forward pass on each silo.", 32);
        var noNormalize = new Option<bool>("--no-normalize") { Description = "Do not L2-normalise the embeddings." };
        var dimensions = CommonOptions.NullableInt("--dimensions", "Keep the first N dimensions (Matryoshka truncation), renormalised.");
        var leaseSeconds = new Option<double>("--lease-seconds") { Description = "A work item whose silo does not renew its lease for this long goes to another silo.", DefaultValueFactory = _ => 60 };
        var maxAttempts = CommonOptions.Int("--max-attempts", "Attempts of one work item before it is reported failed.", 3);
        var jobId = new Option<string?>("--job-id") { Description = "The job's id (default: job-<time>-<random>)." };
        var wait = new Option<bool>("--wait") { Description = "Wait for the job to finish, with a progress bar (as `ullme job wait`)." };
        var command = new Command("submit", "Plan the inputs into work items and start a job; prints its id.")
        {
            cluster, stateDir, clusterId, input, output, textColumn, idColumn, shardRows, pooling, attention, instruction, maxLength, batchSize,
            noNormalize, dimensions, leaseSeconds, maxAttempts, jobId, wait,
        };
        command.SetAction(async (parse, cancellationToken) =>
        {
            var spec = new EmbeddingJobSpec
            {
                Inputs = parse.GetValue(input)!,
                OutputDirectory = parse.GetValue(output)!,
                TextColumn = parse.GetValue(textColumn)!,
                IdColumn = parse.GetValue(idColumn),
                ShardRows = parse.GetValue(shardRows),
                Pooling = parse.GetValue(pooling),
                Attention = parse.GetValue(attention),
                Instruction = parse.GetValue(instruction),
                MaxLength = parse.GetValue(maxLength),
                BatchSize = parse.GetValue(batchSize),
                Normalize = !parse.GetValue(noNormalize),
                Dimensions = parse.GetValue(dimensions),
                LeaseSeconds = parse.GetValue(leaseSeconds),
                MaxAttempts = parse.GetValue(maxAttempts),
            };
            // Planned before connecting: a missing file, a bad column or a bad option is reported without a cluster.
            var (planned, items) = UllmeCluster.Plan(spec, cancellationToken);
            await using var client = await Connect(parse, cluster, stateDir, clusterId, cancellationToken);
            var status = await client.SubmitPlannedAsync(planned, items, parse.GetValue(jobId));
            CliConsole.Note($"{status.JobId}: {status.ItemsTotal} work items, {status.RowsTotal} rows → {status.OutputDirectory}");
            Console.Out.WriteLine(status.JobId);
            Console.Out.Flush();
            return parse.GetValue(wait) ? await WaitFor(client, status.JobId, cancellationToken) : 0;
        });
        return command;
    }

    private static Command IdCommand(string name, string description, Func<UllmeCluster, string, ParseResult, CancellationToken, Task<int>> run)
    {
        var cluster = ClusterOptions.Cluster();
        var stateDir = ClusterOptions.StateDirectory();
        var clusterId = ClusterOptions.ClusterId();
        var id = new Argument<string>("job-id") { Description = "The id `ullme job submit` printed." };
        var command = new Command(name, description) { id, cluster, stateDir, clusterId, Json };
        command.SetAction(async (parse, cancellationToken) =>
        {
            string jobId = UllmeCluster.CheckId(parse.GetValue(id)!);
            await using var client = await Connect(parse, cluster, stateDir, clusterId, cancellationToken);
            return await run(client, jobId, parse, cancellationToken);
        });
        return command;
    }

    private static readonly Option<bool> Json = new("--json") { Description = "Print the status as one JSON object." };

    private static Task<UllmeCluster> Connect(ParseResult parse, Option<string> cluster, Option<string?> stateDir, Option<string?> clusterId, CancellationToken ct) =>
        UllmeCluster.ConnectAsync(parse.GetValue(cluster)!, parse.GetValue(stateDir), parse.GetValue(clusterId), ct);

    private static async Task<int> Status(UllmeCluster client, string id, ParseResult parse, CancellationToken ct)
    {
        var status = await client.GetStatusAsync(id) ?? throw new UllmeException($"no job '{id}' on this cluster.");
        Print(status, parse.GetValue(Json));
        return 0;
    }

    private static async Task<int> Cancel(UllmeCluster client, string id, ParseResult parse, CancellationToken ct)
    {
        var status = await client.CancelAsync(id) ?? throw new UllmeException($"no job '{id}' on this cluster.");
        Print(status, parse.GetValue(Json));
        return 0;
    }

    private static async Task<int> RetryJob(UllmeCluster client, string id, ParseResult parse, CancellationToken ct)
    {
        var status = await client.RetryAsync(id) ?? throw new UllmeException($"no job '{id}' on this cluster.");
        if (status.Phase == JobPhase.Completed) CliConsole.Note($"{id} is already completed; nothing to retry.");
        Print(status, parse.GetValue(Json));
        return 0;
    }

    private static Command List()
    {
        var cluster = ClusterOptions.Cluster();
        var stateDir = ClusterOptions.StateDirectory();
        var clusterId = ClusterOptions.ClusterId();
        var command = new Command("list", "Print the ids of the running jobs, one a line.") { cluster, stateDir, clusterId };
        command.SetAction(async (parse, cancellationToken) =>
        {
            await using var client = await Connect(parse, cluster, stateDir, clusterId, cancellationToken);
            foreach (string id in await client.ListRunningAsync()) Console.Out.WriteLine(id);
            return 0;
        });
        return command;
    }

    private static Task<int> Wait(UllmeCluster client, string id, ParseResult parse, CancellationToken ct) => WaitFor(client, id, ct, parse.GetValue(Json));

    private static async Task<int> WaitFor(UllmeCluster client, string id, CancellationToken ct, bool json = false)
    {
        EmbeddingJobStatus final;
        try
        {
            if (!CliConsole.Err.Profile.Capabilities.Interactive)
            {
                final = await client.WaitAsync(id, null, null, ct);
            }
            else
            {
                EmbeddingJobStatus? done = null;
                await CliConsole.Err.Progress()
                    .AutoClear(false)
                    .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new RemainingTimeColumn(), new SpinnerColumn())
                    .StartAsync(async ctx =>
                    {
                        var task = ctx.AddTask(Markup.Escape(id), maxValue: 1);
                        done = await client.WaitAsync(id, new Progress<EmbeddingJobStatus>(s =>
                        {
                            task.MaxValue = Math.Max(1, s.RowsTotal);
                            task.Value = s.RowsDone;
                            task.Description = Markup.Escape($"{id}: {s.RowsDone}/{s.RowsTotal} rows, {s.RowsPerSecond:F1} rows/s");
                        }), null, ct);
                    });
                final = done!;
            }
        }
        catch (OperationCanceledException) when (ct.IsCancellationRequested)
        {
            throw new CommandInterruptedException($"stopped waiting; job {id} goes on (`ullme job status {id}`, `ullme job cancel {id}`).");
        }
        Print(final, json);
        return final.Phase == JobPhase.Completed ? 0 : 1;
    }

    private static void Print(EmbeddingJobStatus s, bool json)
    {
        if (json)
        {
            Console.Out.WriteLine(JsonSerializer.Serialize(new
            {
                job_id = s.JobId,
                phase = s.Phase.ToString().ToLowerInvariant(),
                rows_done = s.RowsDone,
                rows_total = s.RowsTotal,
                items_done = s.ItemsDone,
                items_total = s.ItemsTotal,
                items_leased = s.ItemsLeased,
                rows_per_second = Math.Round(s.RowsPerSecond, 3),
                eta_seconds = s.Eta?.TotalSeconds,
                retries = s.Retries,
                failed_items = s.FailedItems.Select(f => new { index = f.Index, file = f.File, start_row = f.StartRow, attempts = f.Attempts, error = f.Error }),
                model = s.ModelId,
                output = s.OutputDirectory,
            }));
            return;
        }
        var inv = CultureInfo.InvariantCulture;
        Console.Out.WriteLine(string.Create(inv, $"{s.JobId}: {s.Phase.ToString().ToLowerInvariant()}"));
        Console.Out.WriteLine(string.Create(inv, $"  rows     {s.RowsDone}/{s.RowsTotal} ({(s.RowsTotal > 0 ? 100.0 * s.RowsDone / s.RowsTotal : 100):F1}%)"));
        Console.Out.WriteLine(string.Create(inv, $"  items    {s.ItemsDone}/{s.ItemsTotal} done, {s.ItemsLeased} in progress, {s.FailedItems.Count} failed, {s.Retries} retried"));
        Console.Out.WriteLine(string.Create(inv, $"  rate     {s.RowsPerSecond:F1} rows/s{(s.Eta is { } eta ? $", ETA {eta:hh\\:mm\\:ss}" : "")}"));
        if (s.ModelId is not null) Console.Out.WriteLine($"  model    {s.ModelId}");
        Console.Out.WriteLine($"  output   {s.OutputDirectory}");
        foreach (var f in s.FailedItems)
            Console.Out.WriteLine(string.Create(inv, $"  failed   item {f.Index} ({f.File}, rows from {f.StartRow + 1}) after {f.Attempts} attempts: {f.Error}"));
    }
}
