using Ullme.MLNet.Modeling;
using Ullme.MLNet.Tests.Infrastructure;
using TorchSharp;
using static TorchSharp.torch;

namespace Ullme.MLNet.Tests.Modeling;

/// <summary>A fact that only makes sense where CUDA is not available (the CPU-only test machines).</summary>
public sealed class NoCudaFactAttribute : FactAttribute
{
    public NoCudaFactAttribute()
    {
        if (torch.cuda.is_available()) Skip = "CUDA is available here; this test checks the CPU-only error.";
    }
}

[Collection(TorchCollection.Name)]
public sealed class DeviceSelectorTests
{
    [Theory]
    [InlineData("cpu")]
    [InlineData(" CPU ")]
    public void Cpu_Parses(string text)
    {
        var d = DeviceSelector.Parse(text);
        Assert.Equal(DeviceType.CPU, d.type);
    }

    [NoCudaFact]
    public void Cuda_WithCpuOnlyBackend_ExplainsWhichPackageToReference()
    {
        foreach (string text in new[] { "cuda:0", "cuda", "CUDA:1" })
        {
            var e = Assert.Throws<UllmeException>(() => DeviceSelector.Parse(text));
            Assert.Contains($"'{text}'", e.Message);
            Assert.Contains("CPU-only", e.Message);
            Assert.Contains("TorchSharp-cuda-linux", e.Message);
            Assert.Contains("TorchSharp-cuda-windows", e.Message);
        }
    }

    [Theory]
    [InlineData("gpu0")]
    [InlineData("cuda:")]
    [InlineData("cuda:-1")]
    [InlineData("cuda:x")]
    [InlineData("cuda0")]
    [InlineData("")]
    [InlineData("mps")]
    public void Garbage_IsRejectedNamingTheValue(string text)
    {
        var e = Assert.Throws<UllmeException>(() => DeviceSelector.Parse(text));
        Assert.Contains($"'{text}'", e.Message);
        Assert.Contains("cpu, cuda or cuda:N", e.Message);
    }

    [Fact]
    public void ModelDTypes_MapToTorchTypes()
    {
        Assert.Equal(ScalarType.Float32, DeviceSelector.ToScalarType(ModelDType.Float32));
        Assert.Equal(ScalarType.BFloat16, DeviceSelector.ToScalarType(ModelDType.BFloat16));
        Assert.Throws<ArgumentOutOfRangeException>(() => DeviceSelector.ToScalarType((ModelDType)42));
    }
}
