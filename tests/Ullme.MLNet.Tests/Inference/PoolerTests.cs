using Ullme.MLNet.Pooling;
using Ullme.MLNet.Tests.Infrastructure;
using static TorchSharp.torch;

namespace Ullme.MLNet.Tests.Inference;

[Collection(TorchCollection.Name)]
public class PoolerTests
{
    // Two rows, T = 4, H = 2. Row 0: right-padded (3 real tokens). Row 1: left-padded (2 real tokens).
    private static readonly float[] States =
    [
        1, 10, 2, 20, 3, 30, 99, 99,
        99, 99, 99, 99, 5, 50, 7, 70,
    ];

    private static Tensor Hidden() => tensor(States, [2, 4, 2]);
    private static Tensor Mask(params long[] m) => tensor(m, [2, 4]);

    private static float[] Run(PoolingMode mode, Tensor attention, Tensor? pooling = null)
    {
        using var h = Hidden();
        using var p = Pooler.Pool(h, attention, pooling, mode);
        return p.data<float>().ToArray();
    }

    [Fact]
    public void MeanIgnoresPaddingOnEitherSide()
    {
        using var m = Mask(1, 1, 1, 0, 0, 0, 1, 1);
        Assert.Equal([2f, 20f, 6f, 60f], Run(PoolingMode.Mean, m));
    }

    [Fact]
    public void WeightedMeanWeighsTheKthPooledTokenByK()
    {
        using var m = Mask(1, 1, 1, 0, 0, 0, 1, 1);
        // Row 0: (1*1 + 2*2 + 3*3) / 6 = 14/6; row 1: (1*5 + 2*7) / 3 = 19/3.
        var r = Run(PoolingMode.WeightedMean, m);
        Assert.Equal(14f / 6, r[0], 5);
        Assert.Equal(140f / 6, r[1], 4);
        Assert.Equal(19f / 3, r[2], 5);
        Assert.Equal(190f / 3, r[3], 4);
    }

    [Fact]
    public void LastAndFirstTokenAreCorrectUnderLeftAndRightPadding()
    {
        using var m = Mask(1, 1, 1, 0, 0, 0, 1, 1);
        Assert.Equal([3f, 30f, 7f, 70f], Run(PoolingMode.LastToken, m));
        Assert.Equal([1f, 10f, 5f, 50f], Run(PoolingMode.FirstToken, m));
    }

    [Fact]
    public void InstructionTokensAreExcludedFromMeanButStillCountForBoundaries()
    {
        using var attn = Mask(1, 1, 1, 0, 0, 0, 1, 1);
        // Row 0: token 1 is an instruction token; row 1 has no instruction.
        using var pool = Mask(1, 0, 1, 0, 0, 0, 1, 1);
        Assert.Equal([2f, 20f, 6f, 60f], Run(PoolingMode.Mean, attn, pool));              // (1 + 3) / 2 = 2
        var w = Run(PoolingMode.WeightedMean, attn, pool);
        Assert.Equal((1f * 1 + 2 * 3) / 3, w[0], 5);                                        // weights 1, 2 over pooled tokens only
        Assert.Equal([3f, 30f, 7f, 70f], Run(PoolingMode.LastToken, attn, pool));
    }

    [Fact]
    public void RowWithNothingToPoolFallsBackToItsRealTokens()
    {
        using var attn = Mask(1, 1, 1, 0, 0, 0, 1, 1);
        using var pool = Mask(0, 0, 0, 0, 0, 0, 1, 1);
        Assert.Equal([2f, 20f, 6f, 60f], Run(PoolingMode.Mean, attn, pool));
    }

    [Fact]
    public void NormalizeGivesUnitRows()
    {
        using var x = tensor(new float[] { 3, 4, 0, 0 }, [2, 2]);
        using var n = Pooler.Normalize(x);
        Assert.Equal([0.6f, 0.8f, 0f, 0f], n.data<float>().ToArray());
    }

    [Theory]
    [InlineData("mean", PoolingMode.Mean)]
    [InlineData("weighted-mean", PoolingMode.WeightedMean)]
    [InlineData("last-token", PoolingMode.LastToken)]
    [InlineData("first-token", PoolingMode.FirstToken)]
    [InlineData("cls", PoolingMode.FirstToken)]
    public void ParsesCliNames(string name, PoolingMode expected) => Assert.Equal(expected, Pooler.Parse(name));

    [Fact]
    public void UnknownPoolingNameIsAClearError()
    {
        var e = Assert.Throws<UllmeException>(() => Pooler.Parse("max"));
        Assert.Contains("max", e.Message);
    }
}
