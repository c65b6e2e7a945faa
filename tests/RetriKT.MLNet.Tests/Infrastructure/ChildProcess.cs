using System.Diagnostics;

namespace RetriKT.MLNet.Tests.Infrastructure;

/// <summary>
/// Runs a sample app as a user would, in a real second process: <c>dotnet &lt;app&gt;.dll args</c> from the temp folder
/// (never the repository), both streams captured, killed and failed after a bound. Linked into the other test projects.
/// </summary>
public static class ChildProcess
{
    /// <summary>Runs <paramref name="appDll"/> (a file name next to the test assembly, or a full path) and returns its exit code and streams.</summary>
    public static (int Code, string Output, string Error) RunApp(string appDll, IEnumerable<string> arguments, int timeoutSeconds = 60)
    {
        var start = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, WorkingDirectory = Path.GetTempPath() };
        start.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, appDll));
        foreach (var a in arguments) start.ArgumentList.Add(a);
        using var process = Process.Start(start)!;
        var output = process.StandardOutput.ReadToEndAsync();
        var error = process.StandardError.ReadToEndAsync();
        if (!process.WaitForExit(TimeSpan.FromSeconds(timeoutSeconds)))
        {
            process.Kill(entireProcessTree: true);
            Assert.Fail($"{appDll} {string.Join(' ', start.ArgumentList.Skip(1))}: still running after {timeoutSeconds} s");
        }
        return (process.ExitCode, output.Result, error.Result);
    }
}
