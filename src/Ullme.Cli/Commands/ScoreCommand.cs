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
        var model = CommonOptions.Model("A Hugging Face decoder model folder.");
        var input = new Option<string>("--input", "-i") { Description = "JSONL: {\"prefix\": ..., \"continuation\": ...} or {\"input_ids\": [...], \"score_from\": k} a line.", Required = true };
        var output = new Option<string>("--output", "-o") { Description = "JSONL: {\"token_logprobs\": [...], \"sum\": x, \"mean\": y} a line, in input order.", Required = true };
        var batchSize = new Option<int>("--batch-size") { Description = "Sequences per forward pass.", DefaultValueFactory = _ => 8 };
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
            if (!File.Exists(inPath)) throw new UllmeException($"Input file '{inPath}' does not exist.");
            var loadOptions = CommonOptions.LoadOptions(parse.GetValue(dtype)!, parse.GetValue(device)!);
            CommonOptions.ApplyThreads(parse.GetValue(threads));
            var items = InputReader.ReadJsonlObjects(inPath, (o, line) => ParseItem(o, inPath, line));

            using var loaded = CliConsole.LoadModel(parse.GetValue(model)!, loadOptions);
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
            int batch = parse.GetValue(batchSize);
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
