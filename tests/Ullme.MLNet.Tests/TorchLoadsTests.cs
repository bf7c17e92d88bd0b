using static TorchSharp.torch;

namespace Ullme.MLNet.Tests;

[Collection(Infrastructure.TorchCollection.Name)]
public class TorchLoadsTests
{
    [Fact]
    public void TorchNativeLibraryLoadsInTestHost()
    {
        using var a = ones(2, 3);
        using var b = a.sum();
        Assert.Equal(6f, b.item<float>());
    }
}
