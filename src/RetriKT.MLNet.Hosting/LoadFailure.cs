using System.Reflection;
using System.Text;

namespace RetriKT.MLNet.Hosting;

/// <summary>
/// One printable line for a model that failed to load: ML.NET calls loaders through reflection, so the cause sits
/// under TargetInvocationException layers, and a damaged file can make a parser put raw bytes into its message.
/// (RetriKT.MLNet's <c>ModelFiles.Describe</c> does the same for applications that reference it; this package stays
/// independent of RetriKT.MLNet.)
/// </summary>
internal static class LoadFailure
{
    private const int MaxLength = 400;

    public static string Describe(Exception exception)
    {
        var e = exception;
        while (e is TargetInvocationException or TypeInitializationException or AggregateException && e.InnerException is { } inner) e = inner;
        var text = new StringBuilder();
        foreach (var c in e.Message)
        {
            if (text.Length >= MaxLength) { text.Append('…'); break; }
            text.Append(c is '\n' or '\r' or '\t' ? ' ' : char.IsControl(c) || char.IsSurrogate(c) || c == '\uFFFD' ? '?' : c);
        }
        return text.ToString().Trim();
    }
}
