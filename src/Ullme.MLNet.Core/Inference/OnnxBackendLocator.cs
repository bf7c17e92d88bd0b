using System.Reflection;
using Ullme.MLNet.Modeling;

namespace Ullme.MLNet.Inference;

/// <summary>What the Ullme.MLNet.Onnx package provides to the loader (implemented there, found by name so the
/// engine does not depend on ONNX Runtime).</summary>
internal interface IOnnxBackendFactory
{
    /// <summary>A backbone over the exported graph <paramref name="onnxPath"/>.</summary>
    EmbeddingBackbone Open(string onnxPath, ModelConfig config, EmbeddingDefaults defaults, ModelLoadOptions options);

    /// <summary>A backbone over <paramref name="torch"/> exported in memory with the model's defaults (float32).</summary>
    EmbeddingBackbone Export(EmbeddingBackbone torch, ModelConfig config, EmbeddingDefaults defaults, ModelLoadOptions options, string modelId);
}

/// <summary>Finds the ONNX Runtime backend in the Ullme.MLNet.Onnx assembly.</summary>
internal static class OnnxBackendLocator
{
    internal const string AssemblyName = "Ullme.MLNet.Onnx";
    internal const string TypeName = "Ullme.MLNet.Onnx.Runtime.OnnxBackendFactory";

    /// <summary>The file name of an exported graph in a model folder.</summary>
    public const string ModelFileName = "model.onnx";

    public static IOnnxBackendFactory Get()
    {
        Assembly assembly;
        try
        {
            assembly = Assembly.Load(new AssemblyName(AssemblyName));
        }
        catch (Exception e) when (e is FileNotFoundException or FileLoadException or BadImageFormatException)
        {
            throw new UllmeException(
                $"ModelLoadOptions.Backend = OnnxRuntime (--backend onnx) needs the package {AssemblyName}, which this application does not reference: add it (dotnet add package {AssemblyName}) or use the Torch backend.", e);
        }
        var type = assembly.GetType(TypeName, throwOnError: false)
            ?? throw new UllmeException($"{AssemblyName} has no {TypeName}: its version does not match Ullme.MLNet.Core.");
        return (IOnnxBackendFactory)Activator.CreateInstance(type, nonPublic: true)!;
    }
}
