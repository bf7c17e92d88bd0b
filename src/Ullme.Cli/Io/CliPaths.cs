using System.Runtime.InteropServices;
using Ullme.MLNet;

namespace Ullme.Cli.Io;

/// <summary>Checks on the files a command is given.</summary>
internal static class CliPaths
{
    /// <summary>
    /// Refuses an output that is the input file (the same file by full path after resolving symbolic links and
    /// relative parts): the atomic write would silently replace the input. Checked before anything is written.
    /// </summary>
    public static void RefuseOverwritingInput(string input, string output, string inputFlag = "--input", string outputFlag = "--output")
    {
        if (string.Equals(Canonical(input), Canonical(output), OperatingSystem.IsLinux() ? StringComparison.Ordinal : StringComparison.OrdinalIgnoreCase))
            throw new UllmeException($"{outputFlag} '{output}' is the {inputFlag} file '{input}': writing it would replace the input. Choose another output file.");
    }

    /// <summary>The path with every symbolic link, '.' and '..' resolved; for a file that does not exist yet, its
    /// folder resolved and its name appended.</summary>
    internal static string Canonical(string path)
    {
        string full = Path.GetFullPath(path);
        if (RealPath(full) is { } real) return real;
        string? dir = Path.GetDirectoryName(full);
        if (dir is not null && RealPath(dir) is { } realDir) return Path.Combine(realDir, Path.GetFileName(full));
        return full;
    }

    private static string? RealPath(string path)
    {
        if (OperatingSystem.IsWindows())
        {
            try
            {
                if (!File.Exists(path) && !Directory.Exists(path)) return null;
                var info = File.Exists(path) ? (FileSystemInfo)new FileInfo(path) : new DirectoryInfo(path);
                return info.ResolveLinkTarget(returnFinalTarget: true)?.FullName ?? info.FullName;
            }
            catch (IOException)
            {
                return null;
            }
        }
        nint p = realpath(path, 0);
        if (p == 0) return null;
        try
        {
            return Marshal.PtrToStringUTF8(p);
        }
        finally
        {
            free(p);
        }
    }

    [DllImport("libc", EntryPoint = "realpath")]
    private static extern nint realpath([MarshalAs(UnmanagedType.LPUTF8Str)] string path, nint resolved);

    [DllImport("libc", EntryPoint = "free")]
    private static extern void free(nint p);
}
