using Ullme.MLNet;
using Ullme.MLNet.Samples;

// Samples for docs/mlnet.md. Each command is a small, readable program; run with no arguments for the list.
var commands = new Dictionary<string, (string Help, Func<string[], Task<int>> Run)>(StringComparer.OrdinalIgnoreCase)
{
    ["pipelines"] = ("pipelines [assetsFolder]   UllmeEmbed feeding ML.NET trainers: Banking77 intents (LbfgsMaximumEntropy), k-means, STS-B regression",
        a => Task.FromResult(PipelinesSample.Run(a.Length > 0 ? a[0] : null))),
    ["save-load"] = ("save-load <zip>              fit a pipeline, mlContext.Model.Save it, load it back and predict",
        a => Task.FromResult(SaveLoadSample.Run(Arg(a, 0, "zip")))),
    ["embed-zip"] = ("embed-zip <zip> <texts> <out>  load a saved model zip in this fresh process (no registration), embed one text per line, write float32 rows",
        a => Task.FromResult(SaveLoadSample.EmbedFromZip(Arg(a, 0, "zip"), Arg(a, 1, "texts"), Arg(a, 2, "out")))),
    ["grl-trainer"] = ("grl-trainer <model> <triplets.jsonl> <sts-dev.csv> <outDir> [strategy] [lr]   fine-tune with GrlTrainer (full FT, 1 epoch), STS-B dev before/after, save zip + HF folder",
        a => Task.FromResult(GrlTrainerSample.Run(Arg(a, 0, "model"), Arg(a, 1, "triplets"), Arg(a, 2, "sts-dev"), Arg(a, 3, "outDir"),
            a.Length > 4 ? a[4] : "Contrastive", a.Length > 5 ? double.Parse(a[5], System.Globalization.CultureInfo.InvariantCulture) : 1e-3))),
    ["sweep"] = ("sweep <model> <triplets.jsonl> <sts-dev.csv> <outDir> [trainRows] [devRows]   GrlTrainerSweep: strategy x temperature grid, STS-B dev Spearman, leaderboard + best.zip",
        a => Task.FromResult(SweepSample.Run(Arg(a, 0, "model"), Arg(a, 1, "triplets"), Arg(a, 2, "sts-dev"), Arg(a, 3, "outDir"),
            a.Length > 4 ? int.Parse(a[4]) : 256, a.Length > 5 ? int.Parse(a[5]) : 300))),
    ["score-zip"] = ("score-zip <zip> <pairs.tsv> <out>  load a saved UllmeScore zip (mode Both) in this fresh process, score query<TAB>passage lines",
        a => Task.FromResult(ScoringSample.ScoreFromZip(Arg(a, 0, "zip"), Arg(a, 1, "pairs"), Arg(a, 2, "out")))),
    ["rerank-scifact"] = ("rerank-scifact [assetsFolder] [maxClaims]   SciFact reranking MAP / MRR@10: stories260K by representation, generation, mix; MiniLM by representation",
        a => Task.FromResult(ScoringEvidence.Rerank(a.Length > 0 ? a[0] : null, a.Length > 1 ? int.Parse(a[1]) : null))),
    ["grl-agreement"] = ("grl-agreement [assetsFolder] [strategies...]   Spearman(representation, generation) on STS-B dev for stories260K, base and after 1 epoch per strategy (default Grl)",
        a => Task.FromResult(ScoringEvidence.Agreement(a.Length > 0 ? a[0] : null, a.Length > 1 ? a[1..] : ["Grl"]))),
    ["generator"] = ("generator                     IEmbeddingGenerator: batch, Matryoshka dimensions, usage, semantic search",
        a => GeneratorSample.RunAsync()),
    ["make-qwen2-random"] = ("make-qwen2-random <folder> [assetsFolder]   write a random model of Qwen2-0.5B's shape (for the memory figure)",
        a => Task.FromResult(RandomQwen2.Run(Arg(a, 0, "folder"), a.Length > 1 ? a[1] : null))),
    ["memory"] = ("memory <model|default> [batch] [tokens] [dtype]   peak resident memory of one embedding batch (default 32 x 256, float32)",
        a => Task.FromResult(MemorySample.Run(Arg(a, 0, "model"), a.Length > 1 ? int.Parse(a[1]) : 32, a.Length > 2 ? int.Parse(a[2]) : 256, a.Length > 3 ? a[3] : "float32"))),
};

if (args.Length == 0 || !commands.TryGetValue(args[0], out var command))
{
    Console.WriteLine("usage: Ullme.MLNet.Samples <command> ...");
    foreach (var (_, (help, _)) in commands) Console.WriteLine("  " + help);
    return args.Length == 0 ? 0 : 2;
}
try
{
    return await command.Run(args[1..]);
}
catch (UllmeException e)
{
    Console.Error.WriteLine("error: " + e.Message);
    return 1;
}

static string Arg(string[] a, int i, string name) =>
    i < a.Length ? a[i] : throw new UllmeException($"missing argument <{name}>");
