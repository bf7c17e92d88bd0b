using System.CommandLine;
using System.Globalization;
using System.Text;
using System.Text.Json;
using Ullme.Cli.Io;
using Ullme.MLNet;
using Ullme.MLNet.Inference;

namespace Ullme.Cli.Commands;

/// <summary><c>ullme score</c>: causal log-likelihood of continuations given prefixes.</summary>
internal static class ScoreCommand
{
    public static Command Create()
    {
        // No default: the bundled model is an encoder, which has no language-model head to score with.
        var model = new Option<string>("--model", "-m") { Description = "A Hugging Face decoder model folder (required: the bundled default model is an encoder and cannot score).", Required = true };
        var input = new Option<string>("--input", "-i") { Description = "JSONL: {\"prefix\": ..., \"continuation\": ...} or {\"input_ids\": [...], \"score_from\": k} a line.", Required = true };
        var output = new Option<string>("--output", "-o") { Description = "JSONL: {\"token_logprobs\": [...], \"sum\": x, \"mean\": y} a line, in input order.", Required = true };
        var batchSize = CommonOptions.Int("--batch-size", $"Sequences per forward pass (1 to {EmbeddingOptions.MaxBatchSize}).", 8);
        var dtype = CommonOptions.DType();
        var device = CommonOptions.Device();
        var threads = CommonOptions.Threads();
        var command = new Command("score", "Per-token log-probabilities of continuations given prefixes (causal attention).")
        {
            model, input, output, batchSize, dtype, device, threads,
        };
        command.SetAction((parse, cancellationToken) =>
        {
            string inPath = parse.GetValue(input)!;
            string outPath = parse.GetValue(output)!;
            int batch = parse.GetValue(batchSize);
            new RelevanceOptions { GenerationBatchSize = batch }.Validate();
            string modelName = parse.GetValue(model)!;
            if (modelName == UllmeModel.DefaultModelName)
                throw new UllmeException("--model default is the bundled all-MiniLM-L6-v2, an encoder without a language-model head: score needs a decoder model folder (e.g. --model ./Qwen2-0.5B).");
            if (!File.Exists(inPath)) throw new UllmeException($"Input file '{inPath}' does not exist.");
            CliPaths.RefuseOverwritingInput(inPath, outPath);
            var loadOptions = CommonOptions.LoadOptions(parse.GetValue(dtype)!, parse.GetValue(device)!, parse.GetValue(threads));
            CommonOptions.ApplyThreads(parse.GetValue(threads));
            var stats = new InputStats();
            var items = InputReader.ReadJsonlObjects(inPath, (o, line) => ParseItem(o, inPath, line), stats);
            if (InputReader.Utf8Warning(inPath, stats) is { } utf8) CliConsole.Warn(utf8);

            using var loaded = CliConsole.LoadModel(modelName, loadOptions);
            var engine = new EmbeddingEngine(loaded);
            var requests = new TokenScoreRequest[items.Count];
            for (int i = 0; i < items.Count; i++)
            {
                var (text, ids, from, line) = items[i];
                if (ids is not null)
                {
                    engine.ValidateTokenIds(ids, $"{inPath}:{line}");
                    requests[i] = new TokenScoreRequest(ids, from);
                }
                else requests[i] = engine.ToTokenRequest(text!);
                if (requests[i].ScoreFrom < 1 || requests[i].ScoreFrom > requests[i].InputIds.Count)
                    throw new UllmeException($"{inPath}:{line}: score_from {requests[i].ScoreFrom} must be between 1 and the number of tokens ({requests[i].InputIds.Count}).");
            }
            var results = CliConsole.WithProgress($"Scoring {requests.Length} sequences", requests.Length,
                progress => engine.ScoreTokenIds(requests, batch, progress, cancellationToken));
            AtomicFile.Write(outPath, stream =>
            {
                foreach (var r in results) stream.Write(Encoding.UTF8.GetBytes(ToJson(r) + "\n"));
            });
            CliConsole.Note($"{results.Length} sequences scored ({loaded.ModelId}) → {outPath}");
            return Task.FromResult(0);
        });
        return command;
    }

    private static (ScoreRequest? Text, int[]? Ids, int From, int Line) ParseItem(JsonElement o, string path, int line)
    {
        if (o.TryGetProperty("input_ids", out var ids))
        {
            var parsed = InputReader.ParseIds(ids, path, line, "input_ids");
            if (!o.TryGetProperty("score_from", out var sf) || !sf.TryGetInt32(out int from))
                throw new UllmeException($"{path}:{line}: \"input_ids\" needs an integer \"score_from\".");
            return (null, parsed, from, line);
        }
        if (o.TryGetProperty("prefix", out var p) && p.ValueKind == JsonValueKind.String &&
            o.TryGetProperty("continuation", out var c) && c.ValueKind == JsonValueKind.String)
            return (new ScoreRequest(p.GetString()!, c.GetString()!), null, 0, line);
        throw new UllmeException($"{path}:{line}: expected {{\"prefix\", \"continuation\"}} strings or {{\"input_ids\", \"score_from\"}}.");
    }

    private static string ToJson(ScoreResult r)
    {
        var sb = new StringBuilder("{\"token_logprobs\":[");
        for (int i = 0; i < r.TokenLogProbs.Length; i++)
        {
            if (i > 0) sb.Append(',');
            sb.Append(Number(r.TokenLogProbs[i])); // JSON has no NaN/Infinity: null, like sum and mean
        }
        sb.Append("],\"sum\":").Append(Number(r.Sum)).Append(",\"mean\":").Append(Number(r.Mean)).Append('}');
        return sb.ToString();
    }

    private static string Number(double v) => double.IsFinite(v) ? v.ToString("R", CultureInfo.InvariantCulture) : "null";
}
