using System.ClientModel;
using System.ClientModel.Primitives;
using System.Diagnostics;
using System.Reflection;
using Microsoft.Extensions.AI;
using OpenAI;
using RetriKT.MLNet.Tests.Infrastructure;

namespace RetriKT.MLNet.BlackBox.Tests.Infrastructure;

/// <summary>One TeacherServer for the whole collection (started on first use): start-up is most of a server's cost in a test.</summary>
public sealed class SharedTeacherServer : IDisposable
{
    private readonly Lazy<TeacherServerProcess> _server = new(() => TeacherServerProcess.Start(batchWindowMs: 10));

    public TeacherServerProcess Server => _server.Value;

    public void Dispose()
    {
        if (_server.IsValueCreated) _server.Value.Dispose();
    }
}

/// <summary>
/// A real RetriKT.TeacherServer process serving ../shared's stories260K on 127.0.0.1 (port chosen by the OS), started
/// from the sample's own build output; killed (with its process tree) on dispose or by <see cref="Kill"/>.
/// </summary>
public sealed class TeacherServerProcess : IDisposable
{
    public static string Stories260K => SharedData.Path("models", "llama2c-stories260K", "stories260K.bin");

    private readonly Process _process;
    private readonly List<string> _output = [];

    private TeacherServerProcess(Process process, string url) { _process = process; Url = url; }

    /// <summary>Base address, for example http://127.0.0.1:41234.</summary>
    public string Url { get; }

    /// <summary>The sample's own build output, of the configuration the tests were built with.</summary>
    private static string Dll()
    {
        var configuration = typeof(TeacherServerProcess).Assembly.GetCustomAttribute<AssemblyConfigurationAttribute>()?.Configuration ?? "Debug";
        var dll = Path.Combine(SharedData.RepoRoot, "samples", "RetriKT.TeacherServer", "bin", configuration, "net10.0", "RetriKT.TeacherServer.dll");
        if (!File.Exists(dll)) throw new FileNotFoundException($"TeacherServer is not built: {dll} (the test project references it, so a build of the tests builds it).", dll);
        return dll;
    }

    /// <summary>Runs the server with <paramref name="arguments"/> to its exit (for start-up failures) and returns its exit code and streams.</summary>
    public static (int Code, string Output, string Error) RunToExit(params string[] arguments) => ChildProcess.RunApp(Dll(), arguments);

    /// <summary>Starts a server and waits until it listens; <paramref name="settings"/> are further switches (<c>--MaxBatchRows</c>, <c>4</c>, ...).</summary>
    public static TeacherServerProcess Start(int batchWindowMs = 5, params string[] settings)
    {
        var start = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in new[] { Dll(), "--ModelPath", Stories260K, "--urls", "http://127.0.0.1:0", "--BatchWindowMs", batchWindowMs.ToString(), "--Threads", "1", "--Logging:LogLevel:Default", "Warning" }.Concat(settings))
            start.ArgumentList.Add(a);
        var process = Process.Start(start) ?? throw new InvalidOperationException("could not start RetriKT.TeacherServer");
        var url = new TaskCompletionSource<string>(TaskCreationOptions.RunContinuationsAsynchronously);
        var lines = new List<string>();
        process.OutputDataReceived += (_, e) =>
        {
            if (e.Data is null) { url.TrySetException(new InvalidOperationException("TeacherServer exited before listening:\n" + string.Join("\n", lines))); return; }
            lock (lines) lines.Add(e.Data);
            const string marker = "RetriKT.TeacherServer listening on ";
            if (e.Data.StartsWith(marker, StringComparison.Ordinal)) url.TrySetResult(e.Data[marker.Length..].Trim());
        };
        process.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (lines) lines.Add(e.Data); };
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        if (!url.Task.Wait(TimeSpan.FromSeconds(120)))
        {
            process.Kill(entireProcessTree: true);
            throw new TimeoutException("TeacherServer did not start listening within 120 s:\n" + string.Join("\n", lines));
        }
        return new TeacherServerProcess(process, url.Task.Result);
    }

    /// <summary>An IChatClient through the official OpenAI client (its own retries off: the extractor retries).</summary>
    public IChatClient ChatClient(TimeSpan? timeout = null) => OpenAiChatClient(Url, timeout);

    public static IChatClient OpenAiChatClient(string url, TimeSpan? timeout = null, string model = "stories260K")
        => new OpenAIClient(new ApiKeyCredential("unused"), new OpenAIClientOptions
        {
            Endpoint = new Uri(url + "/v1"), RetryPolicy = new ClientRetryPolicy(0), NetworkTimeout = timeout ?? TimeSpan.FromSeconds(30),
        }).GetChatClient(model).AsIChatClient();

    public bool HasExited => _process.HasExited;

    public void Kill()
    {
        if (!_process.HasExited) _process.Kill(entireProcessTree: true);
        _process.WaitForExit(10_000);
    }

    public void Dispose()
    {
        Kill();
        _process.Dispose();
    }
}
