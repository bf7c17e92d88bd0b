using System.CommandLine;
using System.Diagnostics;
using Ullme.Cli.Io;
using Ullme.MLNet.Inference;

namespace Ullme.Cli.Commands;

/// <summary><c>ullme embed</c>: texts (or pre-tokenized ids) in, one embedding per input row out.</summary>
internal static class EmbedCommand
{
    /// <summary>Inputs are embedded and written this many rows at a time, so memory stays bounded.</summary>
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
        var maxLength = new Option<int?>("--max-length") { Description = "Maximum tokens per text, special tokens included (default: the model's). Longer texts are truncated and counted." };
        var batchSize = new Option<int>("--batch-size") { Description = "Texts per forward pass.", DefaultValueFactory = _ => 32 };
        var dtype = CommonOptions.DType();
        var device = CommonOptions.Device();
        var threads = CommonOptions.Threads();
        var noNormalize = new Option<bool>("--no-normalize") { Description = "Do not L2-normalise the embeddings." };

        var command = new Command("embed", "Embed texts with a model into .npy or .jsonl.")
        {
            model, input, output, textColumn, pooling, attention, instruction, maxLength, batchSize, dtype, device, threads, noNormalize,
        };
        command.SetAction((parse, cancellationToken) =>
        {
            string outPath = parse.GetValue(output)!;
            EmbeddingWriter.CheckExtension(outPath);
            var options = new EmbeddingOptions
            {
                Pooling = CommonOptions.Pooling(parse.GetValue(pooling)),
                Attention = CommonOptions.Attention(parse.GetValue(attention)),
                Instruction = parse.GetValue(instruction),
                MaxLength = parse.GetValue(maxLength),
                BatchSize = parse.GetValue(batchSize),
                Normalize = !parse.GetValue(noNormalize),
            };
            var loadOptions = CommonOptions.LoadOptions(parse.GetValue(dtype)!, parse.GetValue(device)!);
            CommonOptions.ApplyThreads(parse.GetValue(threads));
            var records = InputReader.Read(parse.GetValue(input)!, parse.GetValue(textColumn)!);

            using var loaded = CliConsole.LoadModel(parse.GetValue(model)!, loadOptions);
            var engine = new EmbeddingEngine(loaded);
            var resolved = engine.Resolve(options);
            var clock = Stopwatch.StartNew();
            long tokens = 0;
            int truncated = 0;
            AtomicFile.Write(outPath, stream =>
            {
                var writer = EmbeddingWriter.Open(stream, outPath, records.Count, loaded.EmbeddingDimension);
                CliConsole.WithProgress($"Embedding {records.Count} rows", records.Count, progress =>
                {
                    int done = 0;
                    for (int start = 0; start < records.Count; start += ChunkRows)
                    {
                        var chunk = records.GetRange(start, Math.Min(ChunkRows, records.Count - start));
                        cancellationToken.ThrowIfCancellationRequested();
                        var rows = EmbedChunk(engine, chunk, options, ref tokens, ref truncated, cancellationToken);
                        foreach (var row in rows) writer.Write(row);
                        done += chunk.Count;
                        progress.Report(new EngineProgress(done, records.Count, tokens));
                    }
                    return 0;
                });
            });
            double seconds = clock.Elapsed.TotalSeconds;
            if (truncated > 0) CliConsole.Warn($"{truncated} of {records.Count} texts exceeded {resolved.MaxLength} tokens and were truncated.");
            CliConsole.Note($"{records.Count} embeddings of dimension {loaded.EmbeddingDimension} ({loaded.ModelId}, {Pooling(resolved)}) → {outPath}; " +
                $"{tokens} tokens in {seconds:F1}s ({(seconds > 0 ? records.Count / seconds : 0):F1} texts/s).");
            return Task.FromResult(0);
        });
        return command;
    }

    private static string Pooling(ResolvedEmbeddingOptions o) =>
        $"{MLNet.Pooling.Pooler.ToName(o.Pooling)} pooling, {(o.Attention == MLNet.Modeling.AttentionMode.Causal ? "causal" : "bidirectional")}";

    /// <summary>Embeds one chunk of input rows: texts and pre-tokenized rows separately, results in input order.</summary>
    private static float[][] EmbedChunk(EmbeddingEngine engine, List<InputRecord> chunk, EmbeddingOptions options, ref long tokens, ref int truncated,
        CancellationToken cancellationToken)
    {
        var result = new float[chunk.Count][];
        var textIdx = new List<int>();
        var idIdx = new List<int>();
        for (int i = 0; i < chunk.Count; i++) (chunk[i].InputIds is null ? textIdx : idIdx).Add(i);
        if (textIdx.Count > 0)
        {
            var r = engine.EmbedDetailed(textIdx.Select(i => chunk[i].Text!).ToList(), options, cancellationToken: cancellationToken);
            for (int k = 0; k < textIdx.Count; k++) result[textIdx[k]] = r.Embeddings[k];
            tokens += r.TokenCount;
            truncated += r.TruncatedCount;
        }
        if (idIdx.Count > 0)
        {
            foreach (int i in idIdx) engine.ValidateTokenIds(chunk[i].InputIds!, $"line {chunk[i].Line}");
            var r = engine.EmbedTokenIds(idIdx.Select(i => (IReadOnlyList<int>)chunk[i].InputIds!).ToList(), options, cancellationToken: cancellationToken);
            for (int k = 0; k < idIdx.Count; k++) result[idIdx[k]] = r.Embeddings[k];
            tokens += r.TokenCount;
        }
        return result;
    }
}
