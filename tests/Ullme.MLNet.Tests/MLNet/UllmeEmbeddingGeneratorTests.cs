using Microsoft.Extensions.AI;
using Ullme.MLNet.Extensions.AI;
using Ullme.MLNet.Inference;
using Ullme.MLNet.Tests.Infrastructure;

namespace Ullme.MLNet.Tests.MLNetIntegration;

/// <summary>IEmbeddingGenerator over the engine: results, Matryoshka dimensions, metadata, usage, GetService contract,
/// cancellation between windows, concurrent callers.</summary>
[Collection(TorchCollection.Name)]
public sealed class UllmeEmbeddingGeneratorTests
{
    private static UllmeEmbeddingGenerator Generator(int batchSize = 3) =>
        new(MLNetTestData.Default, new EmbeddingOptions { BatchSize = batchSize });

    [Fact]
    public async Task Embeddings_equal_the_engine_in_order_with_model_id_and_usage()
    {
        using var generator = Generator();
        var texts = MLNetTestData.Texts(14); // several windows of 4 x 3
        var result = await generator.GenerateAsync(texts);

        var reference = MLNetTestData.Reference(texts);
        Assert.Equal(texts.Count, result.Count);
        for (int i = 0; i < texts.Count; i++)
        {
            MLNetTestData.AssertClose(reference[i], result[i].Vector.ToArray());
            Assert.Equal(MLNetTestData.Default.ModelId, result[i].ModelId);
            Assert.NotNull(result[i].CreatedAt);
        }

        // Usage = tokens fed to the model: each text's ids (with special tokens), truncated to the model's max length.
        int max = MLNetTestData.Default.Defaults.MaxLength;
        long expected = texts.Sum(t => (long)Math.Min(max, MLNetTestData.Default.Tokenizer.Encode(t).Count));
        Assert.Equal(expected, result.Usage!.InputTokenCount);
        Assert.Equal(expected, result.Usage.TotalTokenCount);
    }

    [Fact]
    public async Task Dimensions_truncates_and_renormalises()
    {
        using var generator = Generator();
        var texts = MLNetTestData.Texts(3);
        var full = await generator.GenerateAsync(texts);
        var small = await generator.GenerateAsync(texts, new EmbeddingGenerationOptions { Dimensions = 64 });
        for (int i = 0; i < texts.Count; i++)
        {
            var s = small[i].Vector.ToArray();
            Assert.Equal(64, s.Length);
            Assert.Equal(1.0, Math.Sqrt(s.Sum(x => (double)x * x)), 5);
            var head = full[i].Vector.ToArray()[..64];
            float norm = (float)Math.Sqrt(head.Sum(x => (double)x * x));
            MLNetTestData.AssertClose(head.Select(x => x / norm).ToArray(), s, 1e-6f);
        }
        var e = await Assert.ThrowsAsync<UllmeException>(() => generator.GenerateAsync(texts, new EmbeddingGenerationOptions { Dimensions = 385 }));
        Assert.Contains("Dimensions", e.Message);
        Assert.Contains("385", e.Message);
        e = await Assert.ThrowsAsync<UllmeException>(() => generator.GenerateAsync(texts, new EmbeddingGenerationOptions { ModelId = "other-model" }));
        Assert.Contains("other-model", e.Message);
    }

    [Fact]
    public void GetService_follows_the_abstraction_contract()
    {
        using var generator = Generator();
        IEmbeddingGenerator<string, Embedding<float>> g = generator;
        var meta = g.GetService<EmbeddingGeneratorMetadata>();
        Assert.NotNull(meta);
        Assert.Equal(UllmeEmbeddingGenerator.ProviderName, meta.ProviderName);
        Assert.Equal(MLNetTestData.Default.ModelId, meta.DefaultModelId);
        Assert.Equal(MLNetTestData.Dim, meta.DefaultModelDimensions);
        Assert.Same(generator, g.GetService<UllmeEmbeddingGenerator>());
        Assert.Same(generator, g.GetService<IEmbeddingGenerator<string, Embedding<float>>>());
        Assert.Same(generator.Engine, g.GetService<EmbeddingEngine>());
        Assert.Same(MLNetTestData.Default, g.GetService<UllmeModel>());
        Assert.Null(g.GetService(typeof(EmbeddingGeneratorMetadata), serviceKey: "some key"));
        Assert.Null(g.GetService(typeof(string)));
        Assert.Throws<ArgumentNullException>(() => g.GetService(null!));
    }

    [Fact]
    public async Task Cancellation_is_honoured_between_windows()
    {
        using var generator = Generator(batchSize: 2);
        var texts = MLNetTestData.Texts(40); // 5 windows of 8
        using var cts = new CancellationTokenSource();
        await cts.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => generator.GenerateAsync(texts, cancellationToken: cts.Token));

        using var cts2 = new CancellationTokenSource();
        var done = new List<int>();
        generator.WindowCompleted = n => { done.Add(n); cts2.Cancel(); };
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => generator.GenerateAsync(texts, cancellationToken: cts2.Token));
        Assert.Equal([8], done); // stopped after the first window
    }

    [Fact]
    public async Task Eight_concurrent_callers_each_get_the_sequential_result()
    {
        using var generator = Generator(batchSize: 4);
        var inputs = Enumerable.Range(0, 8).Select(c => Enumerable.Range(0, 6 + c).Select(i => MLNetTestData.Text(c * 100 + i)).ToList()).ToList();
        var sequential = new List<GeneratedEmbeddings<Embedding<float>>>();
        foreach (var input in inputs) sequential.Add(await generator.GenerateAsync(input));

        var concurrent = await Task.WhenAll(inputs.Select(input => Task.Run(() => generator.GenerateAsync(input))));
        for (int c = 0; c < inputs.Count; c++)
        {
            Assert.Equal(sequential[c].Count, concurrent[c].Count);
            Assert.Equal(sequential[c].Usage!.InputTokenCount, concurrent[c].Usage!.InputTokenCount);
            for (int i = 0; i < sequential[c].Count; i++)
                MLNetTestData.AssertClose(sequential[c][i].Vector.ToArray(), concurrent[c][i].Vector.ToArray(), 1e-6f);
        }
    }

    [Fact]
    public async Task Invalid_arguments_are_rejected()
    {
        Assert.Throws<UllmeException>(() => new UllmeEmbeddingGenerator(MLNetTestData.Default, new EmbeddingOptions { BatchSize = 0 }));
        using var generator = Generator();
        await Assert.ThrowsAsync<ArgumentNullException>(() => generator.GenerateAsync(null!));
        var e = await Assert.ThrowsAsync<UllmeException>(() => generator.GenerateAsync(["ok", null!]));
        Assert.Contains("value 1", e.Message);
    }
}
