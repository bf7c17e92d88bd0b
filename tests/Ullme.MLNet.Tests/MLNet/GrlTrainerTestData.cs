using Microsoft.ML;
using Ullme.MLNet.Tests.Infrastructure;
using Ullme.MLNet.Training;

namespace Ullme.MLNet.Tests.MLNetIntegration;

/// <summary>A training row as ML.NET sees it: two texts and a variable-length vector of texts.</summary>
public sealed class TripletRow
{
    public string Query { get; set; } = "";
    public string Positive { get; set; } = "";
    public string[] Negatives { get; set; } = [];
}

/// <summary>Training data and a tiny random Llama for the GrlTrainer tests.</summary>
internal static class GrlTrainerTestData
{
    /// <summary>The first <paramref name="count"/> SNLI triplets (premise, entailment, contradiction).</summary>
    public static List<TripletRow> Snli(int count, int skip = 0) =>
        TrainingData.LoadJsonl(Assets.Path("data", "snli", "triplets.jsonl")).Skip(skip).Take(count)
            .Select(e => new TripletRow { Query = e.Query, Positive = e.Positive, Negatives = [.. e.Negatives] }).ToList();

    public static IDataView View(MLContext ml, IEnumerable<TripletRow> rows) => ml.Data.LoadFromEnumerable(rows);

    private static readonly string[] Words =
    [
        "a", "the", "man", "woman", "dog", "cat", "child", "is", "are", "playing", "eating", "running", "sleeping",
        "guitar", "ball", "food", "in", "on", "park", "house", "street", "red", "blue", "small", "big", "two", "people",
        "music", "car", "driving", "reading", "book", "water", "swimming", "sun", "rain", "walking", "bread", "kitchen",
    ];

    /// <summary>Banking-style paraphrase triplets for the default model (positives are paraphrases).</summary>
    public static List<TripletRow> Paraphrases(int count)
    {
        string[][] groups =
        [
            ["my card was declined", "the card payment did not go through", "why was my card rejected"],
            ["what is the exchange rate for euros", "how are currency rates calculated", "which exchange rate do you use"],
            ["i forgot my pin", "how do i reset my pin code", "my pin number is not working"],
            ["the transfer has not arrived", "my bank transfer is still pending", "money sent yesterday is missing"],
            ["how do i close my account", "i want to delete my account", "please terminate my account"],
            ["there is a fee i do not recognise", "why was i charged an extra fee", "unknown charge on my statement"],
        ];
        var rows = new List<TripletRow>();
        for (int i = 0; i < count; i++)
        {
            var g = groups[i % groups.Length];
            var other = groups[(i + 1) % groups.Length];
            rows.Add(new TripletRow { Query = g[i % 3], Positive = g[(i + 1) % 3], Negatives = i % 2 == 0 ? [other[i % 3]] : [] });
        }
        return rows;
    }

    /// <summary>Sentences over the tiny Llama's vocabulary.</summary>
    public static List<TripletRow> TinyTriplets(int count)
    {
        var rng = new Random(5);
        string Sentence(int n) => string.Join(' ', Enumerable.Range(0, n).Select(_ => Words[rng.Next(Words.Length)]));
        return Enumerable.Range(0, count).Select(i => new TripletRow
        {
            Query = Sentence(4 + i % 5), Positive = Sentence(3 + i % 4), Negatives = i % 3 == 0 ? [] : [Sentence(3 + i % 3)],
        }).ToList();
    }

    /// <summary>
    /// A tiny random Llama (the decoder fixture: 2 layers, hidden 32, vocab 64, separate lm_head) with a WordPiece
    /// vocabulary over <see cref="Words"/>, written to a new folder.
    /// </summary>
    public static string TinyLlamaFolder()
    {
        string folder = MLNetTestData.NewTempFolder("ullme-tiny-llama-");
        string fixture = Modeling.DecoderTestSupport.FixtureFolder("llama");
        File.Copy(Path.Combine(fixture, "config.json"), Path.Combine(folder, "config.json"));
        File.Copy(Path.Combine(fixture, "model.safetensors"), Path.Combine(folder, "model.safetensors"));
        var vocab = new List<string> { "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]" };
        vocab.AddRange(Words);
        while (vocab.Count < 64) vocab.Add($"[unused{vocab.Count}]");
        File.WriteAllLines(Path.Combine(folder, "vocab.txt"), vocab);
        return folder;
    }
}
