namespace RetriKT.Samples;

/// <summary>
/// The switches of a server sample's command line, checked against the settings it reads. ASP.NET's configuration
/// takes any <c>--Name value</c>, and binding skips names it does not know, so a misspelt switch went unseen:
/// <c>--ModlePath new.zip</c> served appsettings.json's model.zip, <c>--BatchWindow 20</c> kept the default window.
/// </summary>
internal static class CommandLineSwitches
{
    /// <summary>Switches of the host itself, which every ASP.NET app takes.</summary>
    private static readonly string[] HostSettings =
        ["urls", "http_ports", "https_ports", "environment", "contentRoot", "applicationName", "AllowedHosts", "shutdownTimeoutSeconds", "preventHostingStartup", "hostingStartupAssemblies", "hostingStartupExcludeAssemblies"];

    /// <summary>Sections of the host's own whose keys are not checked here (log levels, endpoints).</summary>
    private static readonly string[] HostSections = ["Logging", "Kestrel"];

    /// <summary>
    /// Refuses the first switch (<c>--Name value</c>, <c>--Name=value</c>, <c>/Name value</c>) that names neither one of
    /// <paramref name="settings"/> (a section's setting as <c>Section:Name</c>) nor the host's own; names are compared as
    /// configuration compares them, ignoring case.
    /// </summary>
    /// <exception cref="ArgumentException">A switch names no setting (the message lists the settings).</exception>
    public static void Check(IReadOnlyList<string> args, IReadOnlyCollection<string> settings)
    {
        for (int i = 0; i < args.Count; i++)
        {
            var arg = args[i];
            string? name = arg.StartsWith("--", StringComparison.Ordinal) ? arg[2..] : arg.StartsWith('/') ? arg[1..] : null;
            if (name is null) continue;
            int equals = name.IndexOf('=');
            if (equals >= 0) name = name[..equals];
            else i++; // the next argument is the value
            if (settings.Contains(name, StringComparer.OrdinalIgnoreCase) || HostSettings.Contains(name, StringComparer.OrdinalIgnoreCase)
                || HostSections.Any(s => name.StartsWith(s + ":", StringComparison.OrdinalIgnoreCase)))
                continue;
            throw new ArgumentException($"Unknown setting '{arg}'; this server's settings are {string.Join(", ", settings.Select(s => "--" + s))} " +
                                        $"(and the host's: --urls, --environment, --Logging:..., --Kestrel:...).");
        }
    }

    /// <summary>The settings a class binds: its public properties' names, under <paramref name="section"/> when given.</summary>
    public static IEnumerable<string> Of<T>(string? section = null)
        => typeof(T).GetProperties().Where(p => p.CanWrite).Select(p => section is null ? p.Name : $"{section}:{p.Name}");
}
