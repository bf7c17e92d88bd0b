using System.CommandLine;
using System.Diagnostics;
using Ullme.Cli.Io;
using Ullme.MLNet;
using Ullme.MLNet.Inference;
using Ullme.MLNet.IO;

namespace Ullme.Cli.Commands;

/// <summary><c>ullme embed</c>: texts (or pre-tokenized ids) in, one embedding per input row out.</summary>
internal static class EmbedCommand
{
    /// <summary>Inputs are read, embedded and written this many rows at a time, so memory stays bounded whatever the
    /// input's length (the progress bar still moves every batch: the engine reports it).</summary>
    private const int ChunkRows = 4096;

    public static Command Create()
    {
        var model = CommonOptions.Model();
        var input = new Option<string>("--input", "-i") { Description = "Input: .txt (one text a line), .jsonl ({\"text\"} or {\"input_ids\"}), .csv/.tsv (with --text-column).", Required = true };
        var output = new Option<string>("--output", "-o") { Description = "Output: .npy (float32 [N, D]) or .jsonl ({\"embedding\": [...]} a line).", Required = true };
        var textColumn = new Option<string>("--text-column") { Description = "Column holding the text in .csv/.tsv input.", DefaultValueFactory = _ => "text" };
        var pooling = new Option<string?>("--pooling") { Description = "mean | weighted-mean | last-token | first-token (default: the model's)." };
        var attention = new Option<string?>("--attention") { Description = "bidirectional | causal (default: bidirectional)." };
        var instruction = new Option<string?>("--instruction") { Description = "Text put before every input; attended to, excluded from pooling." };
        var maxLength = CommonOptions.NullableInt("--max-length", "Maximum tokens per text, special tokens included, 2 to the model's max_position_embeddings (default: the model's). Longer texts are truncated and counted.");
        var batchSize = CommonOptions.Int("--batch-size", $"Texts per forward pass (1 to {EmbeddingOptions.MaxBatchSize}).", 32);
        var dtype = CommonOptions.DType();
        var device = CommonOptions.Device();
        var backend = CommonOptions.Backend();
        var threads = CommonOptions.Threads();
        var noNormalize = new Option<bool>("--no-normalize") { Description = "Do not L2-normalise the embeddings." };
        var dimensions = CommonOptions.NullableInt("--dimensions", "Keep the first N dimensions of each embedding (Matryoshka truncation), renormalised (default: all).");

        var command = new Command("embed", "Embed texts with a model into .npy or .jsonl.")
        {
            model, input, output, textColumn, pooling, attention, instruction, maxLength, batchSize, dtype, device, backend, threads, noNormalize, dimensions,
        };
        command.SetAction((parse, cancellationToken) =>
        {
            string inPath = parse.GetValue(input)!;
            string outPath = parse.GetValue(output)!;
            string column = parse.GetValue(textColumn)!;
            EmbeddingWriter.CheckExtension(outPath);
            var options = new EmbeddingOptions
            {
                Pooling = CommonOptions.Pooling(parse.GetValue(pooling)),
                Attention = CommonOptions.Attention(parse.GetValue(attention)),
                Instruction = parse.GetValue(instruction),
                MaxLength = parse.GetValue(maxLength),
                BatchSize = parse.GetValue(batchSize),
                Normalize = !parse.GetValue(noNormalize),
                Dimensions = parse.GetValue(dimensions),
            };
            options.Validate();
            var loadOptions = CommonOptions.LoadOptions(parse.GetValue(dtype)!, parse.GetValue(device)!, parse.GetValue(threads), parse.GetValue(backend));
            CommonOptions.ApplyThreads(parse.GetValue(threads));
            if (!File.Exists(inPath)) throw new UllmeException($"Input file '{inPath}' does not exist.");
            CliPaths.RefuseOverwritingInput(inPath, outPath);

            // First pass: every row parsed (a bad line stops us before the model loads) and counted (the .npy header
            // needs the row count); nothing is kept, so memory does not grow with the input.
            var stats = new InputStats();
            int count = 0;
            foreach (var _ in InputReader.Enumerate(inPath, column, stats))
            {
                cancellationToken.ThrowIfCancellationRequested();
                count++;
            }
            if (InputReader.Utf8Warning(inPath, stats) is { } utf8) CliConsole.Warn(utf8);

            using var loaded = CliConsole.LoadModel(parse.GetValue(model)!, loadOptions);
            var engine = new EmbeddingEngine(loaded);
            var resolved = engine.Resolve(options);
            var clock = Stopwatch.StartNew();
            long tokens = 0;
            int truncated = 0;
            AtomicFile.Write(outPath, stream =>
            {
                var writer = EmbeddingWriter.Open(stream, outPath, count, resolved.Dimensions ?? loaded.EmbeddingDimension);
                CliConsole.WithProgress($"Embedding {count} rows", count, progress =>
                {
                    int done = 0;
                    var chunk = new List<InputRecord>(Math.Min(ChunkRows, Math.Max(count, 1)));
                    void Flush()
                    {
                        cancellationToken.ThrowIfCancellationRequested();
                        int before = done;
                        long tokensBefore = tokens;
                        var perBatch = new SyncProgress<EngineProgress>(p => progress.Report(new EngineProgress(before + p.Done, count, tokensBefore + p.Tokens)));
                        var rows = EmbedChunk(engine, inPath, chunk, options, perBatch, ref tokens, ref truncated, cancellationToken);
                        foreach (var row in rows)
                        {
                            writer.Write(row);
                            FaultInjection.Reach("embed-row");
                        }
                        done += chunk.Count;
                        progress.Report(new EngineProgress(done, count, tokens));
                        chunk.Clear();
                    }
                    foreach (var record in InputReader.Enumerate(inPath, column))
                    {
                        chunk.Add(record);
                        if (chunk.Count == ChunkRows) Flush();
                    }
                    if (chunk.Count > 0) Flush();
                    if (done != count) throw new UllmeException($"'{inPath}' changed while it was read ({count} rows, then {done}).");
                    return 0;
                });
            });
            double seconds = clock.Elapsed.TotalSeconds;
            if (truncated > 0) CliConsole.Warn($"{truncated} of {count} texts exceeded {resolved.MaxLength} tokens and were truncated.");
            CliConsole.Note($"{count} embeddings of dimension {resolved.Dimensions ?? loaded.EmbeddingDimension} ({loaded.ModelId}, {Pooling(resolved)}) → {outPath}; " +
                $"{tokens} tokens in {seconds:F1}s ({(seconds > 0 ? count / seconds : 0):F1} texts/s).");
            return Task.FromResult(0);
        });
        return command;
    }

    private static string Pooling(ResolvedEmbeddingOptions o) =>
        $"{OptionNames.Pooling.ToName(o.Pooling)} pooling, {OptionNames.Attention.ToName(o.Attention)}";

    /// <summary>Embeds one chunk of input rows: texts and pre-tokenized rows separately, results in input order.</summary>
    private static float[][] EmbedChunk(EmbeddingEngine engine, string path, List<InputRecord> chunk, EmbeddingOptions options,
        IProgress<EngineProgress> progress, ref long tokens, ref int truncated, CancellationToken cancellationToken)
    {
        var result = new float[chunk.Count][];
        var textIdx = new List<int>();
        var idIdx = new List<int>();
        for (int i = 0; i < chunk.Count; i++) (chunk[i].InputIds is null ? textIdx : idIdx).Add(i);
        if (textIdx.Count > 0)
        {
            var r = engine.EmbedDetailed(textIdx.Select(i => chunk[i].Text!).ToList(), options, progress, cancellationToken);
            for (int k = 0; k < textIdx.Count; k++) result[textIdx[k]] = r.Embeddings[k];
            tokens += r.TokenCount;
            truncated += r.TruncatedCount;
        }
        if (idIdx.Count > 0)
        {
            foreach (int i in idIdx) engine.ValidateTokenIds(chunk[i].InputIds!, $"{path}, line {chunk[i].Line}");
            int textsDone = textIdx.Count;
            var r = engine.EmbedTokenIds(idIdx.Select(i => (IReadOnlyList<int>)chunk[i].InputIds!).ToList(), options,
                new SyncProgress<EngineProgress>(p => progress.Report(new EngineProgress(textsDone + p.Done, chunk.Count, p.Tokens))), cancellationToken);
            for (int k = 0; k < idIdx.Count; k++) result[idIdx[k]] = r.Embeddings[k];
            tokens += r.TokenCount;
        }
        return result;
    }
}
