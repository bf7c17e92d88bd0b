using System.Reflection;

namespace Ullme.MLNet.Inference;

/// <summary>
/// Finds the bundled default model (all-MiniLM-L6-v2) for <c>UllmeModel.Load("default")</c>. The weights live in
/// the separate package <c>Ullme.MLNet.DefaultModel</c>, so that an application that serves its own model does not
/// carry 90 MB it never reads; the engine therefore cannot reference it and looks for it by name at run time, the
/// way ML.NET's component catalog finds loadable classes. <c>Ullme.MLNet</c> (the ML.NET package) and the CLI
/// reference it, so their users never notice.
/// </summary>
internal static class DefaultModelLocator
{
    internal const string AssemblyName = "Ullme.MLNet.DefaultModel";
    internal const string TypeName = "Ullme.MLNet.Inference.DefaultModel";

    /// <summary>The cache folder of the default model (built on first use) and its Hugging Face id.</summary>
    public static (string Folder, string ModelId) EnsureFolder()
    {
        Assembly assembly;
        try
        {
            assembly = Assembly.Load(new AssemblyName(AssemblyName));
        }
        catch (Exception e) when (e is FileNotFoundException or FileLoadException or BadImageFormatException)
        {
            throw new UllmeException(
                $"The default model (all-MiniLM-L6-v2) is in the package {AssemblyName}, which this application does not reference: " +
                $"add it (dotnet add package {AssemblyName}) or give a model folder or Hugging Face id instead of 'default'.", e);
        }
        var type = assembly.GetType(TypeName, throwOnError: true)!;
        var ensure = type.GetMethod("EnsureFolder", BindingFlags.Public | BindingFlags.Static, Type.EmptyTypes)
            ?? throw new UllmeException($"{AssemblyName} has no {TypeName}.EnsureFolder(): its version does not match Ullme.MLNet.Core.");
        string id = (string)type.GetField("HuggingFaceId", BindingFlags.Public | BindingFlags.Static)!.GetValue(null)!;
        try
        {
            return ((string)ensure.Invoke(null, null)!, id);
        }
        catch (TargetInvocationException e) when (e.InnerException is not null)
        {
            System.Runtime.ExceptionServices.ExceptionDispatchInfo.Capture(e.InnerException).Throw();
            throw;
        }
    }
}
