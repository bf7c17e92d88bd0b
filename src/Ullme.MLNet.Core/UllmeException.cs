namespace Ullme.MLNet;

/// <summary>
/// A user-facing error: bad model folder, malformed file, invalid option or input. Its message names the file,
/// column, option or value at fault and is meant to be shown as one line, without a stack trace.
/// </summary>
public class UllmeException : Exception
{
    public UllmeException(string message) : base(message) { }
    public UllmeException(string message, Exception inner) : base(message, inner) { }
}
