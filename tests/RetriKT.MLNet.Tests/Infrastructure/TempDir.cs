namespace RetriKT.MLNet.Tests.Infrastructure;

/// <summary>A fresh folder under the temp path for one test, removed with everything in it when disposed.</summary>
public sealed class TempDir : IDisposable
{
    public TempDir(string prefix = "retrikt-") => Path = Directory.CreateTempSubdirectory(prefix).FullName;

    public string Path { get; }

    public string File(string name) => System.IO.Path.Combine(Path, name);

    public void Dispose()
    {
        try
        {
            Directory.Delete(Path, recursive: true);
        }
        catch (IOException)
        {
            // A file still open (a process the test started and left) keeps its folder; the OS temp cleaner takes it.
        }
    }
}
