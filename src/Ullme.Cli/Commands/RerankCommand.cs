using System.CommandLine;
using System.Globalization;
using System.Text;
using System.Text.Json;
using Ullme.Cli.Io;
using Ullme.MLNet;
using Ullme.MLNet.Inference;
using Ullme.MLNet.Training.Losses;

namespace Ullme.Cli.Commands;

/// <summary><c>ullme rerank</c>: orders each query's candidates by representation, generation or mixed relevance.</summary>
internal static class RerankCommand
{
    public static Command Create()
    {
        var model = CommonOptions.Model("A Hugging Face model folder, or 'default' (all-MiniLM-L6-v2: --by representation only).");
        var input = new Option<string>("--input", "-i") { Description = "JSONL: {\"query\": ..., \"candidates\": [...]} a line (\"id\" optional, kept).", Required = true };
        var output = new Option<string>("--output", "-o") { Description = "JSONL, one line per input line: {\"query\", \"ranking\": [{\"index\", \"text\", \"score\", \"rank\", \"representation\"?, \"generation\"?}]} best first.", Required = true };
        var by = new Option<string>("--by") { Description = "representation (cosine of embeddings), generation (mean log-prob of the candidate after the prompt) or mix.", DefaultValueFactory = _ => "representation" };
        var mixWeight = new Option<double>("--mix-weight") { Description = "w in [0, 1] for --by mix: (1 - w)·z(representation) + w·z(generation), z standardised per query.", DefaultValueFactory = _ => 0.5 };
        var instruction = new Option<string?>("--instruction") { Description = "Task instruction: fills {instruction} of the prompt and precedes the query when embedded." };
        var prompt = new Option<string?>("--prompt") { Description = "Generation prompt template with {query} (and {instruction}); default \"{instruction}\\nQuery: {query}\\nPassage: \"." };
        var score = new Option<string>("--generation-score") { Description = "mean or sum of the candidate's token log-probs.", DefaultValueFactory = _ => "mean" };
        var batchSize = CommonOptions.Int("--batch-size", $"Sequences per forward pass (1 to {EmbeddingOptions.MaxBatchSize}).", 8);
        var dtype = CommonOptions.DType();
        var device = CommonOptions.Device();
        var backend = CommonOptions.Backend();
        var threads = CommonOptions.Threads();
        var command = new Command("rerank", "Rank candidate passages for each query by representation, generation or mixed relevance.")
        {
            model, input, output, by, mixWeight, instruction, prompt, score, batchSize, dtype, device, backend, threads,
        };
        command.SetAction((parse, cancellationToken) =>
        {
            string inPath = parse.GetValue(input)!;
            string outPath = parse.GetValue(output)!;
            if (!File.Exists(inPath)) throw new UllmeException($"Input file '{inPath}' does not exist.");
            int batch = parse.GetValue(batchSize);
            var options = new RerankOptions
            {
                By = ParseBy(parse.GetValue(by)!),
                MixWeight = parse.GetValue(mixWeight),
                Relevance = new RelevanceOptions
                {
                    Instruction = parse.GetValue(instruction),
                    GenerationPrompt = parse.GetValue(prompt) ?? GenerationPrompt.DefaultTemplate,
                    GenerationScore = ParseScore(parse.GetValue(score)!),
                    GenerationBatchSize = batch,
                    Embedding = new EmbeddingOptions { BatchSize = batch },
                },
            };
            options.Validate();
            var loadOptions = CommonOptions.LoadOptions(parse.GetValue(dtype)!, parse.GetValue(device)!, parse.GetValue(threads), parse.GetValue(backend));
            CommonOptions.ApplyThreads(parse.GetValue(threads));
            CliPaths.RefuseOverwritingInput(inPath, outPath);
            var stats = new InputStats();
            var items = InputReader.ReadJsonlObjects(inPath, (o, line) => ParseItem(o, inPath, line), stats);
            if (InputReader.Utf8Warning(inPath, stats) is { } utf8) CliConsole.Warn(utf8);

            using var loaded = CliConsole.LoadModel(parse.GetValue(model)!, loadOptions);
            var reranker = new Reranker(new EmbeddingEngine(loaded), options);
            int pairs = items.Sum(i => i.Query.Candidates.Count);
            var ranked = CliConsole.WithProgress($"Scoring {pairs} candidates of {items.Count} queries", pairs,
                progress => reranker.Rerank(items.Select(i => i.Query).ToArray(), progress, cancellationToken));
            AtomicFile.Write(outPath, stream =>
            {
                for (int i = 0; i < items.Count; i++) stream.Write(Encoding.UTF8.GetBytes(ToJson(items[i].Id, items[i].Query.Query, ranked[i]) + "\n"));
            });
            CliConsole.Note($"{items.Count} queries reranked by {options.By.ToString().ToLowerInvariant()} ({loaded.ModelId}) → {outPath}");
            return Task.FromResult(0);
        });
        return command;
    }

    internal static RerankBy ParseBy(string value) => OptionNames.RerankBy.Parse(value, "RerankOptions.By");

    private static GenerationScore ParseScore(string value) => OptionNames.GenerationScore.Parse(value, "RelevanceOptions.GenerationScore");

    private static (JsonElement? Id, RerankQuery Query) ParseItem(JsonElement o, string path, int line)
    {
        if (!o.TryGetProperty("query", out var q) || q.ValueKind != JsonValueKind.String)
            throw new UllmeException($"{path}:{line}: expected a string \"query\".");
        if (!o.TryGetProperty("candidates", out var c) || c.ValueKind != JsonValueKind.Array)
            throw new UllmeException($"{path}:{line}: expected an array \"candidates\" of strings.");
        var candidates = new List<string>();
        int k = 0;
        foreach (var e in c.EnumerateArray())
        {
            if (e.ValueKind != JsonValueKind.String) throw new UllmeException($"{path}:{line}: \"candidates\"[{k}] is not a string.");
            candidates.Add(e.GetString()!);
            k++;
        }
        if (candidates.Count == 0) throw new UllmeException($"{path}:{line}: \"candidates\" is empty.");
        JsonElement? id = o.TryGetProperty("id", out var idValue) ? idValue.Clone() : null;
        return (id, new RerankQuery(q.GetString()!, candidates));
    }

    private static string ToJson(JsonElement? id, string query, IReadOnlyList<RankedCandidate> ranking)
    {
        using var ms = new MemoryStream();
        using (var w = new Utf8JsonWriter(ms))
        {
            w.WriteStartObject();
            if (id is { } i) { w.WritePropertyName("id"); i.WriteTo(w); }
            w.WriteString("query", query);
            w.WriteStartArray("ranking");
            foreach (var r in ranking)
            {
                w.WriteStartObject();
                w.WriteNumber("index", r.Index);
                w.WriteString("text", r.Text);
                Number(w, "score", r.Score);
                w.WriteNumber("rank", r.Rank);
                if (r.Representation is { } rep) Number(w, "representation", rep);
                if (r.Generation is { } gen) Number(w, "generation", gen);
                w.WriteEndObject();
            }
            w.WriteEndArray();
            w.WriteEndObject();
        }
        return Encoding.UTF8.GetString(ms.ToArray());
    }

    private static void Number(Utf8JsonWriter w, string name, double v)
    {
        if (double.IsFinite(v)) w.WriteNumber(name, v);
        else w.WriteNull(name);
    }
}
