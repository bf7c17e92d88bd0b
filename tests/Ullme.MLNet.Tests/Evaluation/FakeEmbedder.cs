using Ullme.MLNet.Evaluation;
using Ullme.MLNet.Inference;

namespace Ullme.MLNet.Tests.Evaluation;

/// <summary>A deterministic embedder for task tests: a function of the text; records every call.</summary>
internal sealed class FakeEmbedder(Func<string, float[]> embed, string key = "fake") : ITextEmbeddingSource
{
    public List<(string Text, string? Instruction)> Calls { get; } = [];

    public int CallCount { get; private set; }

    public string CacheKey => key;

    public float[][] Embed(IReadOnlyList<string> texts, string? instruction, IProgress<EngineProgress>? progress = null,
        CancellationToken cancellationToken = default)
    {
        CallCount++;
        foreach (var t in texts) Calls.Add((t, instruction));
        progress?.Report(new EngineProgress(texts.Count, texts.Count, 0));
        return texts.Select(embed).ToArray();
    }

    /// <summary>"angle:θ" -> the unit vector at θ degrees; anything else -> a vector from the text's hash.</summary>
    public static float[] Angle(string text)
    {
        int colon = text.LastIndexOf(':');
        double deg = double.Parse(text[(colon + 1)..], System.Globalization.CultureInfo.InvariantCulture);
        double rad = deg * Math.PI / 180;
        return [(float)Math.Cos(rad), (float)Math.Sin(rad)];
    }
}
