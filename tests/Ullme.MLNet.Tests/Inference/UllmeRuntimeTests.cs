using Ullme.MLNet.Inference;
using Ullme.MLNet.Tests.Infrastructure;
using static TorchSharp.torch;

namespace Ullme.MLNet.Tests.Inference;

/// <summary>
/// The process-wide CPU settings the engine relies on for speed and bounded memory: thread counts reach libtorch,
/// bad counts are refused with a named option, and loading the assembly installs the passive OpenMP wait policy
/// and the fixed glibc mmap threshold unless the process chose its own.
/// </summary>
[Collection(TorchCollection.Name)]
public sealed class UllmeRuntimeTests
{
    [Fact]
    public void SetThreads_ReachesLibtorch()
    {
        int before = get_num_threads();
        try
        {
            UllmeRuntime.SetThreads(1);
            Assert.Equal(1, get_num_threads());
            Assert.Equal(1, UllmeRuntime.IntraOpThreads);
            UllmeRuntime.SetThreads(2);
            Assert.Equal(2, get_num_threads());
        }
        finally
        {
            set_num_threads(before);
        }
    }

    [Fact]
    public void SetThreads_RejectsNonPositiveCounts()
    {
        var e = Assert.Throws<UllmeException>(() => UllmeRuntime.SetThreads(0));
        Assert.Contains("threads must be at least 1", e.Message);
        Assert.Throws<UllmeException>(() => UllmeRuntime.SetThreads(1, interOpThreads: 0));
    }

    [Fact]
    public void ModelLoadOptions_Threads_IsAppliedAndValidatedOnLoad()
    {
        int before = get_num_threads();
        try
        {
            var e = Assert.Throws<UllmeException>(() => UllmeModel.Load("default", new ModelLoadOptions { Threads = 0 }));
            Assert.Contains("ModelLoadOptions.Threads", e.Message);
            using var model = UllmeModel.Load("default", new ModelLoadOptions { Threads = 1 });
            Assert.Equal(1, get_num_threads());
        }
        finally
        {
            set_num_threads(before);
        }
    }

    [Fact]
    public void OpenMpWaitPolicy_IsPassiveUnlessTheProcessSetOne()
    {
        if (!OperatingSystem.IsLinux()) return;
        string? own = Environment.GetEnvironmentVariable("OMP_WAIT_POLICY");
        if (own is null && Environment.GetEnvironmentVariable("GOMP_SPINCOUNT") is null)
            Assert.Equal(UllmeRuntime.DefaultOmpWaitPolicy, UllmeRuntime.OmpWaitPolicy);
        else if (own is not null)
            Assert.Equal(own, UllmeRuntime.OmpWaitPolicy);
    }

    [Fact]
    public void SpinningWait_IsRefusedOnceLibtorchHasLoaded()
    {
        if (!OperatingSystem.IsLinux()) return;
        _ = UllmeRuntime.IntraOpThreads;                    // libtorch (and its libgomp) loaded: the policy is fixed
        string? before = UllmeRuntime.OmpWaitPolicy;
        Assert.False(UllmeRuntime.UseSpinningWait());
        Assert.Equal(before, UllmeRuntime.OmpWaitPolicy);
    }

    [Fact]
    public void GlibcMmapThreshold_IsFixedUnlessTheProcessSetOne()
    {
        if (!OperatingSystem.IsLinux()) return;
        bool own = Environment.GetEnvironmentVariable("MALLOC_MMAP_THRESHOLD_") is not null;
        Assert.Equal(!own, UllmeRuntime.MmapThresholdInstalled);
    }
}
