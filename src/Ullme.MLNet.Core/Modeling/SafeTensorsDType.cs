using static TorchSharp.torch;

namespace Ullme.MLNet.Modeling;

/// <summary>
/// The safetensors dtype strings ("F32", "BF16", ...) and their torch counterparts. Safetensors stores every element
/// as raw little-endian bytes, so a dtype is fully described by its torch type and element size.
/// </summary>
internal static class SafeTensorsDType
{
    private static readonly (string Name, ScalarType Type, int Size)[] Table =
    [
        ("F64", ScalarType.Float64, 8),
        ("F32", ScalarType.Float32, 4),
        ("F16", ScalarType.Float16, 2),
        ("BF16", ScalarType.BFloat16, 2),
        ("I64", ScalarType.Int64, 8),
        ("I32", ScalarType.Int32, 4),
        ("I16", ScalarType.Int16, 2),
        ("I8", ScalarType.Int8, 1),
        ("U8", ScalarType.Byte, 1),
        ("BOOL", ScalarType.Bool, 1),
    ];

    /// <summary>Dtypes the format defines that torch (or TorchSharp) cannot hold; named in errors.</summary>
    private static readonly HashSet<string> KnownButUnsupported = ["U16", "U32", "U64", "F8_E4M3", "F8_E5M2", "F8_E8M0", "F4", "F6_E2M3", "F6_E3M2", "C64"];

    public static string SupportedList => string.Join(", ", Table.Select(t => t.Name));

    public static bool TryGet(string name, out ScalarType type, out int elementSize)
    {
        foreach (var entry in Table)
        {
            if (entry.Name == name)
            {
                type = entry.Type;
                elementSize = entry.Size;
                return true;
            }
        }
        type = default;
        elementSize = 0;
        return false;
    }

    public static bool IsKnownButUnsupported(string name) => KnownButUnsupported.Contains(name);

    public static string NameOf(ScalarType type)
    {
        foreach (var entry in Table)
            if (entry.Type == type) return entry.Name;
        throw new UllmeException($"Tensors of type {type} cannot be stored in safetensors (supported: {SupportedList}).");
    }

    public static bool IsFloating(ScalarType type) =>
        type is ScalarType.Float16 or ScalarType.BFloat16 or ScalarType.Float32 or ScalarType.Float64;
}
