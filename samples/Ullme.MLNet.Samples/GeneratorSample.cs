using Microsoft.Extensions.AI;
using Ullme.MLNet.Extensions.AI;

namespace Ullme.MLNet.Samples;

/// <summary>The same engine behind Microsoft.Extensions.AI's IEmbeddingGenerator.</summary>
public static class GeneratorSample
{
    public static async Task<int> RunAsync()
    {
        using IEmbeddingGenerator<string, Embedding<float>> generator = UllmeEmbeddingGenerator.Load("default");
        var meta = generator.GetService<EmbeddingGeneratorMetadata>()!;
        Console.WriteLine($"{meta.ProviderName}: {meta.DefaultModelId}, {meta.DefaultModelDimensions} dimensions");

        string[] docs =
        [
            "My card payment was declined at the shop.",
            "How long does a transfer to another bank take?",
            "I want to change the PIN of my card.",
            "Is there a fee for withdrawing cash abroad?",
        ];
        var embeddings = await generator.GenerateAsync(docs);
        Console.WriteLine($"{embeddings.Count} embeddings, {embeddings.Usage?.InputTokenCount} input tokens");

        // Matryoshka truncation: the first 128 dimensions, re-normalised.
        var small = await generator.GenerateAsync(docs, new EmbeddingGenerationOptions { Dimensions = 128 });
        Console.WriteLine($"truncated to {small[0].Dimensions} dimensions");

        var query = (await generator.GenerateAsync(["why was my purchase rejected?"]))[0].Vector;
        var best = docs.Select((d, i) => (d, score: Dot(query.Span, embeddings[i].Vector.Span))).MaxBy(x => x.score);
        Console.WriteLine($"best match for 'why was my purchase rejected?': \"{best.d}\" ({best.score:F3})");
        return 0;
    }

    private static float Dot(ReadOnlySpan<float> a, ReadOnlySpan<float> b)
    {
        float s = 0;
        for (int i = 0; i < a.Length; i++) s += a[i] * b[i];
        return s;
    }
}
