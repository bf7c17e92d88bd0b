using System.Diagnostics;
using System.Globalization;
using TorchSharp;
using static TorchSharp.torch;

namespace Ullme.MLNet.Modeling;

/// <summary>Turns user-facing device and dtype options into torch values, with errors that say how to fix them.</summary>
internal static class DeviceSelector
{
    /// <summary>
    /// Parses <c>"cpu"</c>, <c>"cuda"</c> (GPU 0) or <c>"cuda:N"</c> (case-insensitive).
    /// </summary>
    /// <exception cref="UllmeException">Unknown device text, CUDA not available in this process, or no GPU N.</exception>
    public static Device Parse(string device)
    {
        ArgumentNullException.ThrowIfNull(device);
        string text = device.Trim().ToLowerInvariant();
        if (text == "cpu") return CPU;

        int index;
        if (text == "cuda") index = 0;
        else if (text.StartsWith("cuda:", StringComparison.Ordinal)
                 && int.TryParse(text.AsSpan(5), NumberStyles.None, CultureInfo.InvariantCulture, out index)) { }
        else
            throw new UllmeException($"Unknown device '{device}'. Use cpu, cuda or cuda:N (N = GPU index).");

        if (!torch.cuda.is_available())
        {
            string why = CudaBackendLoaded()
                ? "a CUDA build of libtorch is loaded but it sees no usable GPU (check the NVIDIA driver and CUDA_VISIBLE_DEVICES)"
                : "the TorchSharp native backend in use is CPU-only (libtorch-cpu)";
            throw new UllmeException(
                $"Device '{device}' is not available: {why}. To run on an NVIDIA GPU, reference the package " +
                "TorchSharp-cuda-linux (Linux) or TorchSharp-cuda-windows (Windows) instead of the CPU libtorch package, " +
                "or use device 'cpu'.");
        }
        int count = torch.cuda.device_count();
        if (index >= count)
            throw new UllmeException($"Device '{device}' does not exist: this machine has {count} CUDA device{(count == 1 ? "" : "s")} (cuda:0{(count > 1 ? $" .. cuda:{count - 1}" : "")}).");
        return new Device(DeviceType.CUDA, index);
    }

    /// <summary>The torch element type of a <see cref="ModelDType"/>.</summary>
    public static ScalarType ToScalarType(ModelDType dtype) => dtype switch
    {
        ModelDType.Float32 => ScalarType.Float32,
        ModelDType.BFloat16 => ScalarType.BFloat16,
        _ => throw new ArgumentOutOfRangeException(nameof(dtype), dtype, "Unknown model dtype."),
    };

    /// <summary>Whether libtorch's CUDA library is mapped into this process (tells "CPU-only build" from "no GPU").</summary>
    private static bool CudaBackendLoaded()
    {
        try
        {
            using var self = Process.GetCurrentProcess();
            foreach (ProcessModule m in self.Modules)
            {
                string name = m.ModuleName;
                if (name.Contains("torch_cuda", StringComparison.OrdinalIgnoreCase)) return true;
            }
        }
        catch (Exception e) when (e is InvalidOperationException or NotSupportedException or System.ComponentModel.Win32Exception)
        {
        }
        return false;
    }
}
