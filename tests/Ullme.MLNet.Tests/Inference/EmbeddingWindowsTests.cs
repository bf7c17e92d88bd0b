using Ullme.MLNet.Inference;
using Ullme.MLNet.Tests.Infrastructure;
using Ullme.MLNet.Tests.MLNetIntegration;

namespace Ullme.MLNet.Tests.Inference;

/// <summary>
/// The engine sorts texts by length inside bounded windows and (optionally) tokenizes the next window while the model
/// runs on the current one. None of that may change a single embedding or its row order, and errors and cancellation must still
/// surface from the worker thread.
/// </summary>
[Collection(TorchCollection.Name)]
public sealed class EmbeddingWindowsTests
{
    private static readonly List<string> Texts = MLNetTestData.Texts(70);

    [Theory]
    [InlineData(8, true)]
    [InlineData(8, false)]
    [InlineData(20, true)]
    [InlineData(1000, true)]
    public void WindowsAndOverlapLeaveEveryEmbeddingInPlace(int window, bool overlap)
    {
        var engine = new EmbeddingEngine(MLNetTestData.Default);
        var whole = engine.EmbedDetailed(Texts, new EmbeddingOptions { BatchSize = 8, SortWindow = 0 });
        var windowed = engine.EmbedDetailed(Texts, new EmbeddingOptions { BatchSize = 8, SortWindow = window, OverlapTokenization = overlap });
        Assert.Equal(whole.TokenCount, windowed.TokenCount);
        for (int i = 0; i < Texts.Count; i++)
            MLNetTestData.AssertClose(whole.Embeddings[i], windowed.Embeddings[i], 1e-5f);
        // Row i is text i, not merely some text: compare a few rows with the text embedded alone.
        foreach (int i in new[] { 0, 9, 33, 69 })
            MLNetTestData.AssertClose(engine.Embed([Texts[i]])[0], windowed.Embeddings[i], 1e-4f);
    }

    [Fact]
    public void ProgressCountsEveryTextOnceAcrossWindows()
    {
        var engine = new EmbeddingEngine(MLNetTestData.Default);
        var reports = new List<EngineProgress>();
        var progress = new SynchronousProgress<EngineProgress>(reports.Add);
        engine.Embed(Texts, new EmbeddingOptions { BatchSize = 8, SortWindow = 16, OverlapTokenization = true }, progress);
        Assert.Equal(Texts.Count, reports[^1].Done);
        Assert.All(reports, r => Assert.Equal(Texts.Count, r.Total));
        Assert.Equal(reports.Select(r => r.Done).Order(), reports.Select(r => r.Done));
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void NullTextInALaterWindowIsNamedByItsIndex(bool overlap)
    {
        var engine = new EmbeddingEngine(MLNetTestData.Default);
        var texts = Texts.Select(t => (string?)t).ToList();
        texts[41] = null;
        var error = Assert.Throws<UllmeException>(() =>
            engine.Embed(texts!, new EmbeddingOptions { BatchSize = 8, SortWindow = 16, OverlapTokenization = overlap }));
        Assert.Contains("Text 41 is null", error.Message);
    }

    [Fact]
    public void CancellationStopsBetweenBatches()
    {
        var engine = new EmbeddingEngine(MLNetTestData.Default);
        using var cts = new CancellationTokenSource();
        int reports = 0;
        var progress = new SynchronousProgress<EngineProgress>(_ => { if (++reports == 2) cts.Cancel(); });
        Assert.ThrowsAny<OperationCanceledException>(() =>
            engine.Embed(Texts, new EmbeddingOptions { BatchSize = 8, SortWindow = 16, OverlapTokenization = true }, progress, cts.Token));
        Assert.Equal(2, reports);
    }

    [Fact]
    public void NegativeSortWindowIsRejected()
    {
        var engine = new EmbeddingEngine(MLNetTestData.Default);
        var error = Assert.Throws<UllmeException>(() => engine.Embed(Texts, new EmbeddingOptions { SortWindow = -1 }));
        Assert.Contains("sort window", error.Message);
    }

    /// <summary>IProgress that reports on the calling thread (Progress&lt;T&gt; posts to the thread pool).</summary>
    private sealed class SynchronousProgress<T>(Action<T> report) : IProgress<T>
    {
        public void Report(T value) => report(value);
    }
}
