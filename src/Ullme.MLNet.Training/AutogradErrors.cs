namespace Ullme.MLNet.Training;

/// <summary>
/// An exception thrown inside a custom autograd function's backward would cross libtorch's native autograd engine
/// and take the process down. Our backward functions catch it, record it here and return no gradient; the code
/// that started the backward (and the next forward through such a function) rethrows it.
/// </summary>
internal static class AutogradErrors
{
    [ThreadStatic] private static Exception? _pending;

    public static void Record(Exception e) => _pending ??= e;

    /// <summary>Throws (once) the first exception recorded on this thread since the last call.</summary>
    public static void ThrowIfAny()
    {
        var e = _pending;
        if (e is null) return;
        _pending = null;
        throw new UllmeException($"A gradient computation failed during backward: {e.Message}", e);
    }
}
