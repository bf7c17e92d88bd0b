using System.Globalization;
using Microsoft.ML;

namespace Ullme.MLNet.Samples;

/// <summary>UllmeScore in a fresh process: a saved scoring model zip loads without registration and scores pairs.</summary>
public static class ScoringSample
{
    internal sealed class Pair
    {
        public string Query { get; set; } = "";
        public string Passage { get; set; } = "";
    }

    internal sealed class Scores
    {
        public float Relevance { get; set; }
        public float RelevanceRepresentation { get; set; }
    }

    /// <summary>Loads <paramref name="zip"/> (a UllmeScore transform in mode Both), scores "query\tpassage" lines,
    /// writes "generation\trepresentation" lines.</summary>
    public static int ScoreFromZip(string zip, string pairsFile, string outFile)
    {
        var ml = new MLContext();
        var model = ml.Model.Load(zip, out var schema);
        var pairs = File.ReadAllLines(pairsFile).Select(l => l.Split('\t', 2)).Select(f => new Pair { Query = f[0], Passage = f[1] }).ToList();
        var output = model.Transform(ml.Data.LoadFromEnumerable(pairs, schema));
        File.WriteAllLines(outFile, ml.Data.CreateEnumerable<Scores>(output, reuseRowObject: false)
            .Select(s => s.Relevance.ToString("R", CultureInfo.InvariantCulture) + "\t" + s.RelevanceRepresentation.ToString("R", CultureInfo.InvariantCulture)));
        Console.WriteLine($"scored {pairs.Count} pairs");
        return 0;
    }
}
